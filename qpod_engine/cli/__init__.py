"""The ``qpod`` command line (``main``: the parser and one module per command group) and
``qpod-shell``; ``front`` is the installed entry point that hands ``qpod exec`` to the C client
before anything is imported.

Contract: the top of the engine, beside ``api``; nothing in the engine imports it.
"""
