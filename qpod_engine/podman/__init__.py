"""The only code that reaches podman: its API service, the warm containers' lifecycle
(podman-py), stats, images built from repository files and for the demo and tests, registries,
rootless podman's user namespace, other hosts over ssh, and ``podman exec`` as the fallback
transport.

Contract: nothing outside this package imports podman-py or runs the podman program.
"""
