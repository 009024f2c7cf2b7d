"""`securelink asterisk install|uninstall`: a drop-in install on an existing Asterisk configuration.

Functional core, thin shell: `plan` decides every byte from a snapshot of the config directory (pure); `apply` reads
the directory, backs up, writes atomically and reverts on failure; `asterisk` and `systemd` run the outside
commands. Asterisk config text is read by `conf`, the securelink TOML is edited by `tomledit`, the product's own
files (the dialplan, the systemd units) are found by `resources`.
"""
