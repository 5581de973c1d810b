"""The LiveKit agent worker protocol: one WebSocket registration per AgentDeployment.

Layer rule: this package knows LiveKit's worker protocol and nothing of Kubernetes or the
runner stream; what to do with availability requests and assignments is injected.
"""

from agent_operator.worker.connection import WorkerConnection, WorkerHandler, WorkerOptions

__all__ = ["WorkerConnection", "WorkerHandler", "WorkerOptions"]
