"""What the user declared and its compiled form: environments and the option table that drives
their validation, flags, form and docs (``fields``); bindings of repositories; a repository's own
``.qpod.yaml`` and its allow records; the snapshot and the rules file the launcher and the
preload library read; the names and hashes of the warm containers they compile to.

Contract: imports only ``base``; never reaches podman.
"""
