"""Packages of the wheel. Everything else about the build is in setup.cfg.

The installer's data and the database migrations keep one source each at the top of the repository (`dialplan/`,
`contrib/systemd/`, `alembic/`, where the manual install, the testbed and `alembic upgrade head` read them); the wheel carries them as package data of the two packages mapped onto
those folders below, read at run time with importlib.resources (asterisk_securelink/installer/resources.py).
setup.cfg cannot add mapped packages next to `find:`, hence this file.
"""

from setuptools import find_packages, setup

DATA_PACKAGES = {
    "asterisk_securelink.installer.dialplan": "dialplan",
    "asterisk_securelink.installer.systemd": "contrib/systemd",
    "asterisk_securelink.store.alembic": "alembic",  # the migrations (asterisk_securelink/store/migrations.py)
    "asterisk_securelink.store.alembic.versions": "alembic/versions",
}

setup(
    packages=[*find_packages(include=["asterisk_securelink*"]), *DATA_PACKAGES],
    package_dir=DATA_PACKAGES,
    package_data={
        "asterisk_securelink.installer.dialplan": ["*.conf", "*.sample"],
        "asterisk_securelink.installer.systemd": ["*.service"],
        "asterisk_securelink.store.alembic": ["script.py.mako"],
    },
)
