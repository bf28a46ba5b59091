"""The API's connection to Temporal: made at the first request that needs it (so the API starts,
and answers ``/healthz``, while Temporal is still coming up), and made again after a failed try."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from common.settings import Settings
from common.temporal import ServerUnreachable as ConnectionRefused
from common.temporal import connect
from starter.client import RegistrationClient, ServerUnreachable

READY_TIMEOUT = timedelta(seconds=5)


class Backend:
    """The ``RegistrationClient`` of this API process, connected on first use."""

    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self._settings = settings
        self._client = client
        self._registrations = RegistrationClient(client, settings) if client else None
        self._lock = asyncio.Lock()

    async def registrations(self) -> RegistrationClient:
        """The client; ``ServerUnreachable`` while Temporal cannot be reached."""
        if self._registrations is not None:
            return self._registrations
        async with self._lock:
            if self._registrations is None:
                try:
                    self._client = await connect(self._settings)
                except ConnectionRefused as err:
                    reason = str(err).split("): ", 1)[-1]
                    raise ServerUnreachable(err.address, reason, "retry in a moment") from None
                self._registrations = RegistrationClient(self._client, self._settings)
            return self._registrations

    async def ready(self) -> str | None:
        """None when Temporal answers and a worker polls the task queue; else what is missing."""
        try:
            await self.registrations()
        except ServerUnreachable as err:
            return f"Temporal is not reachable: {err}"
        client = self._client
        assert client is not None
        request = DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=self._settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        try:
            answer = await client.workflow_service.describe_task_queue(
                request, timeout=READY_TIMEOUT
            )
        except RPCError as err:
            return f"Temporal did not describe the task queue: {err.message}"
        if not answer.pollers:
            return f"no worker polls the task queue {self._settings.task_queue!r}"
        return None
