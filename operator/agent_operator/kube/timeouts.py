"""How long one Kubernetes API call may take.

kubernetes_asyncio sets no timeout at all by default, so an API server that accepts the
connection and never answers (a partition, an overloaded server) would hang a status loop, a
pod creation or a runner's attach forever. Every call the operator makes passes one of these.
"""

from __future__ import annotations

# reads and writes; above an admission webhook's 30 s maximum would be pointless
REQUEST_TIMEOUT_SECONDS = 30.0
# a runner waits on it while attaching; it retries when told UNAVAILABLE
TOKENREVIEW_TIMEOUT_SECONDS = 10.0
