"""`python -m asterisk_securelink.cli`: the `securelink` command."""

import sys

from asterisk_securelink.cli import main

sys.exit(main())
