"""Activation (``qpod activate``): the preload library reaches every new interactive shell of
the user (a startup hook per shell) and every program of the desktop session (systemd's user
environment generator), so no one has to remember to start ``qpod-shell``. ``scripts`` writes
the per-user files and the startup-file lines, ``state`` turns it on and off and says whether it
is on."""
