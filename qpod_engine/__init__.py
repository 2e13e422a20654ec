"""qpod engine: config, bindings, routing policy, podman backend, launcher and CLI.

Never imports the UI. The launcher's hot path (``launcher.py``) imports only the
stdlib and the small modules it needs; podman-py, pygit2 and PyYAML are imported
lazily where they are really used.
"""

__version__ = "0.1.0"
