"""livekit-agent-operator: the control plane.

Registers with LiveKit as an agent worker for every ``AgentDeployment``, maps each accepted
job to a short-lived pod and supervises the pod's runner over a gRPC heartbeat stream.
"""

__version__ = "0.1.0"
