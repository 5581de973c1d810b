"""A deployment's registration with LiveKit: its worker, kept registered with the spec's
settings and the Secret's credentials, and registered anew when either changes.

Re-registering replaces the worker connection only: jobs being placed or running are the
deployment's and go on (their outcome is reported through the worker of that moment).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from agent_operator import metrics
from agent_operator.kube.pods import transient
from agent_operator.kube.podspec import Owner
from agent_operator.kube.secrets import Credentials, CredentialsError
from agent_operator.spec import WORKER_TYPES, DeploymentSpec, SecretRef
from agent_operator.worker import WorkerConnection, WorkerOptions
from agent_operator.worker.connection import WorkerHandler

log = logging.getLogger("agent_operator.deployment")

SECRET_RECHECK_SECONDS = 10.0
API_RETRY_SECONDS = 2.0  # while the API server is unreachable


class Registration:
    def __init__(
        self,
        owner: Owner,
        read_credentials: Callable[[str, SecretRef], Awaitable[Credentials]],
        handler: WorkerHandler,
        fields: dict[str, str],
        block: Callable[[str, str], None],
        unblock: Callable[[], None],
    ) -> None:
        self._owner = owner
        self._read_credentials = read_credentials
        self._handler = handler
        self._fields = fields
        self._block = block
        self._unblock = unblock
        self._labels = (owner.namespace, owner.name)
        self.worker: WorkerConnection | None = None
        self._task: asyncio.Task[None] | None = None
        # the worker's; they also sign resumed jobs' tokens
        self.credentials: Credentials | None = None
        self.credentials_ready = asyncio.Event()

    async def run(
        self,
        spec_of: Callable[[], DeploymentSpec | None],
        invalid: Callable[[], bool],
        changed: asyncio.Event,
        stopping: asyncio.Event,
        on_change: Callable[[], None],
    ) -> None:
        """Until ``stopping``: register, and re-register on a change (``changed``) of the
        spec's LiveKit settings or of the credentials (looked at every few seconds)."""
        key: tuple[object, ...] | None = None
        creds: Credentials | None = None
        try:
            while not stopping.is_set():
                changed.clear()
                spec = spec_of()
                recheck = SECRET_RECHECK_SECONDS
                if spec is not None and not invalid():
                    new_creds, recheck = await self._credentials(spec, creds)
                    new_key = (spec.registration_key(), new_creds)
                    if new_creds is None or new_key != key:
                        if self.worker is not None:
                            log.info(
                                "re-registering the worker (LiveKit settings or credentials changed)",
                                extra=self._fields,
                            )
                            await self.stop()
                        key = None
                    if new_creds is not None and self.worker is None:
                        self._start(spec, new_creds)
                        key, creds = new_key, new_creds
                        self.credentials = new_creds
                        self.credentials_ready.set()
                elif self.worker is not None:
                    await self.stop()
                    key = None
                on_change()
                waiters = {asyncio.ensure_future(stopping.wait()), asyncio.ensure_future(changed.wait())}
                _, pending = await asyncio.wait(waiters, timeout=recheck, return_when=asyncio.FIRST_COMPLETED)
                for fut in pending:
                    fut.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            del creds

    async def _credentials(
        self, spec: DeploymentSpec, current: Credentials | None
    ) -> tuple[Credentials | None, float]:
        try:
            found = await self._read_credentials(self._owner.namespace, spec.credentials)
        except CredentialsError as exc:
            self._block(exc.reason, str(exc))
            return None, SECRET_RECHECK_SECONDS
        except Exception as exc:
            if not transient(exc):
                raise
            # the API server is away: what we have keeps working (the worker and running
            # calls need no API call); look again soon
            log.warning(
                "could not re-read the LiveKit credentials, keeping the current ones: %s",
                short(exc),
                extra=self._fields,
            )
            return current, API_RETRY_SECONDS
        self._unblock()
        return found, SECRET_RECHECK_SECONDS

    def _start(self, spec: DeploymentSpec, creds: Credentials) -> None:
        options = WorkerOptions(
            url=spec.livekit_url,
            api_key=creds.api_key,
            api_secret=creds.api_secret,
            agent_name=spec.agent_name,
            worker_type=WORKER_TYPES[spec.worker_type],
            namespace=spec.worker_namespace,
            permissions=spec.participant_permission(),
        )
        self.worker = WorkerConnection(options, self._handler, self._fields)
        self._task = asyncio.create_task(
            self.worker.run(), name=f"worker {self._owner.namespace}/{self._owner.name}"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.close()
        metrics.WORKER_CONNECTED.labels(*self._labels).set(0)

    async def close(self) -> None:
        await self.stop()
        self.credentials = None


def short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 300 else text[:300] + "..."
