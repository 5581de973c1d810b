"""agent-jobrunner: the runtime inside a job pod.

Attaches to the operator over a gRPC stream, waits for its job, joins the LiveKit room and
runs the user's entrypoint.
"""

__version__ = "0.1.0"
