"""The command log: one JSON line per record, appended by every launch (the native-exec client
writes the same format in C), read, followed and indexed by ``qpod log`` and the dashboard.

Contract: imports only ``base``; stdlib only.
"""
