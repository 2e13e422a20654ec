"""What every other part stands on: one-line errors with exit statuses, where config and state
live (and the install's own programs), private files and locks, text shown literally, YAML with
line numbers, and git facts read without blocking.

Contract: imports nothing of qpod above it; stdlib only at import time (the launcher's hot path
loads it), except ``yamlio`` (PyYAML) and ``gitinfo.discover_root`` (pygit2, imported lazily).
"""
