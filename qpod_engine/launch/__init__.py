"""The launcher, the slow path of a redirected command: the preload library or ``qpod exec``
starts ``entry.py``; it decides, prepares the container and hands over to the native-exec client
through a launch spec (``spec``).

Contract: stdlib only at import time (a redirected command must not pay for PyYAML, podman-py or
pygit2 unless it needs them); nothing imports it but ``cli`` and ``api``.
"""
