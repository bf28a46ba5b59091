"""The load generator: registrations (or baseline units) end to end, a bounded number at a time.

A unit is what a customer and a backend do together: start the workflow, wait for the code to
arrive, submit it, and get the answer once the account is active. The submission is timed (the
activation latency); a failure is counted with its message and the run goes on, so a bad run
still reports.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from temporalio.client import Client

from bench.baseline import CODE, BaselineInput, BaselineState, BaselineWorkflow
from bench.mailbox import read_code, wait_for
from common.settings import Settings
from starter.client import RegistrationClient
from workflows.models import ActivationOutcome, RegistrationResult, RegistrationState

TIMEOUT_SECONDS = 120.0
"""How long a unit waits for its code or its workflow's end before it counts as failed."""


class Scenario(Protocol):
    async def one(self, name: str) -> float:
        """Run one unit end to end; return the activation's seconds; raise unless activated."""

    async def finished(self, name: str) -> bool:
        """Whether the unit's workflow completed in its happy end state."""

    def workflow_id(self, name: str) -> str: ...


class RegistrationScenario:
    """Registrations through the public client API, codes read from the (sharded) outbox."""

    def __init__(self, client: Client, settings: Settings, password: str) -> None:
        self._client = client
        self._registrations = RegistrationClient(client, settings)
        self._outbox = settings.outbox_path
        self._password = password

    @staticmethod
    def email(name: str) -> str:
        return f"bench{name}@example.com"

    async def one(self, name: str) -> float:
        await self.start(name)
        return await self.activate(name)

    async def start(self, name: str) -> None:
        """The registration's start (``register``); its code is mailed later, by the worker."""
        await self._registrations.register(
            email=self.email(name), name="Bench Customer", password=self._password
        )

    async def mailed(self, name: str) -> None:
        """Until the code of ``name``'s registration is mailed."""
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await read_code(self._outbox, self.email(name))

    async def activate(self, name: str) -> float:
        """Read the mailed code (waiting for it) and submit it; the submission's seconds."""
        email = self.email(name)
        async with asyncio.timeout(TIMEOUT_SECONDS):
            code = await read_code(self._outbox, email)
        began = time.perf_counter()
        reply = await self._registrations.submit_code(email, code)
        took = time.perf_counter() - began
        if reply.outcome is not ActivationOutcome.ACTIVATED:
            raise RuntimeError(f"activation answered {reply.outcome.value}")
        return took

    async def finished(self, name: str) -> bool:
        handle = self._client.get_workflow_handle(
            self.workflow_id(name), result_type=RegistrationResult
        )
        return (await handle.result()).state is RegistrationState.ACTIVE

    def workflow_id(self, name: str) -> str:
        return self._registrations.registration_id(self.email(name))


class BaselineScenario:
    """Baseline workflows, started and updated the way ``RegistrationClient`` does it."""

    def __init__(self, client: Client, task_queue: str, marker_dir: Path) -> None:
        self._client = client
        self._task_queue = task_queue
        self._marker_dir = marker_dir

    async def one(self, name: str) -> float:
        workflow_id = self.workflow_id(name)
        handle = await self._client.start_workflow(
            BaselineWorkflow.run,
            BaselineInput(marker=workflow_id),
            id=workflow_id,
            task_queue=self._task_queue,
            static_summary="Baseline registration",
        )
        async with asyncio.timeout(TIMEOUT_SECONDS):
            await wait_for(self._marker_dir / workflow_id, mail=False)
        began = time.perf_counter()
        state = await handle.execute_update(BaselineWorkflow.submit_activation_code, CODE)
        took = time.perf_counter() - began
        if state is not BaselineState.ACTIVE:
            raise RuntimeError(f"activation answered {state}")
        return took

    async def finished(self, name: str) -> bool:
        handle = self._client.get_workflow_handle(self.workflow_id(name), result_type=BaselineState)
        return await handle.result() is BaselineState.ACTIVE

    def workflow_id(self, name: str) -> str:
        return f"baseline-{name}"


@dataclass
class Batch:
    activations: list[float] = field(default_factory=list)
    """Seconds from submitting the code to the answer, one per unit that succeeded."""
    failures: list[str] = field(default_factory=list)
    wall: float = 0.0


async def drive(scenario: Scenario, names: list[str], concurrency: int) -> Batch:
    """Run every unit, at most ``concurrency`` at a time (a new one starts as one ends)."""
    batch = Batch()
    pending = iter(names)

    async def lane() -> None:
        for name in pending:  # one shared iterator: each name is taken by exactly one lane
            try:
                batch.activations.append(await scenario.one(name))
            except Exception as err:  # counted and reported; the run goes on
                batch.failures.append(f"{name}: {type(err).__name__}: {err}")

    began = time.perf_counter()
    async with asyncio.TaskGroup() as lanes:
        for _ in range(min(concurrency, len(names))):
            lanes.create_task(lane())
    batch.wall = time.perf_counter() - began
    return batch


async def count_unfinished(scenario: Scenario, names: list[str], concurrency: int) -> int:
    """How many units' workflows did not complete happily. Checked after the timed window: the
    answer comes before the workflow's last step (the welcome mail), so a run is only counted
    whole once every workflow has also ended."""
    gate = asyncio.Semaphore(concurrency)

    async def check(name: str) -> bool:
        async with gate:
            try:
                return await asyncio.wait_for(scenario.finished(name), TIMEOUT_SECONDS)
            except Exception:  # a failed or stuck workflow simply does not count
                return False

    return len(names) - sum(await asyncio.gather(*(check(name) for name in names)))
