"""Where a launch runs: the routing decision (``policy.decide``, the twin of the preload
library's C decision) and the preload library seen from Python (its path, LD_PRELOAD entry, the
C decision's Python twin, doctor's checks).

Contract: imports only ``base`` and ``config``; stdlib only at import time.
"""
