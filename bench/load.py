"""The load generator: registrations (or baseline runs) end to end, a bounded number at a time.

Each unit is what a customer and a backend do together: start (``register``), wait for the code to
arrive, submit it (``submit_code``, which answers once the account is active). Each phase is timed
on its own; a failure is counted with its message and the run goes on, so a bad run still reports.
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

CODE_TIMEOUT_SECONDS = 120.0
"""How long a unit waits for its code before it counts as failed (only a stuck worker hits it)."""


@dataclass(frozen=True)
class Sample:
    """Seconds spent in each phase of one unit."""

    start: float
    """``register`` (or ``start_workflow``) until it returned."""
    code_wait: float
    """From then until the code was read: the workflow's first steps and the mail delivery."""
    activation: float
    """``submit_code`` (or the update) until it returned ACTIVATED."""

    @property
    def total(self) -> float:
        return self.start + self.code_wait + self.activation


@dataclass
class Batch:
    samples: list[Sample] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall: float = 0.0


class Scenario(Protocol):
    async def one(self, name: str) -> Sample:
        """Run one unit end to end; raise if it does not end activated."""

    async def finished(self, name: str) -> bool:
        """Whether the unit's workflow completed in its happy end state."""

    def workflow_id(self, name: str) -> str:
        """The id of the unit's workflow."""


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

    async def one(self, name: str) -> Sample:
        email = self.email(name)
        began = time.perf_counter()
        await self._registrations.register(
            email=email, name="Bench Customer", password=self._password
        )
        started = time.perf_counter()
        async with asyncio.timeout(CODE_TIMEOUT_SECONDS):
            code = await read_code(self._outbox, email)
        delivered = time.perf_counter()
        reply = await self._registrations.submit_code(email, code)
        activated = time.perf_counter()
        if reply.outcome is not ActivationOutcome.ACTIVATED:
            raise RuntimeError(f"activation answered {reply.outcome.value}")
        return Sample(started - began, delivered - started, activated - delivered)

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

    async def one(self, name: str) -> Sample:
        workflow_id = self.workflow_id(name)
        began = time.perf_counter()
        handle = await self._client.start_workflow(
            BaselineWorkflow.run,
            BaselineInput(marker=workflow_id),
            id=workflow_id,
            task_queue=self._task_queue,
            static_summary="Baseline registration",
        )
        started = time.perf_counter()
        async with asyncio.timeout(CODE_TIMEOUT_SECONDS):
            await wait_for(self._marker_dir / workflow_id, mail=False)
        delivered = time.perf_counter()
        state = await handle.execute_update(BaselineWorkflow.submit_activation_code, CODE)
        activated = time.perf_counter()
        if state is not BaselineState.ACTIVE:
            raise RuntimeError(f"activation answered {state}")
        return Sample(started - began, delivered - started, activated - delivered)

    async def finished(self, name: str) -> bool:
        handle = self._client.get_workflow_handle(self.workflow_id(name), result_type=BaselineState)
        return await handle.result() is BaselineState.ACTIVE

    def workflow_id(self, name: str) -> str:
        return f"baseline-{name}"


async def drive(scenario: Scenario, names: list[str], concurrency: int) -> Batch:
    """Run every unit, at most ``concurrency`` at a time (a new one starts as one ends)."""
    batch = Batch()
    pending = iter(names)

    async def lane() -> None:
        for name in pending:  # one shared iterator: each name is taken by exactly one lane
            try:
                batch.samples.append(await scenario.one(name))
            except Exception as err:  # counted and reported; the run goes on
                batch.failures.append(f"{name}: {type(err).__name__}: {err}")

    began = time.perf_counter()
    async with asyncio.TaskGroup() as lanes:
        for _ in range(min(concurrency, len(names))):
            lanes.create_task(lane())
    batch.wall = time.perf_counter() - began
    return batch


async def count_finished(scenario: Scenario, names: list[str], concurrency: int) -> int:
    """How many units' workflows completed happily (checked after the timed window)."""
    gate = asyncio.Semaphore(concurrency)

    async def check(name: str) -> bool:
        async with gate:
            try:
                return await asyncio.wait_for(scenario.finished(name), CODE_TIMEOUT_SECONDS)
            except Exception:  # a failed or stuck workflow simply does not count
                return False

    return sum(await asyncio.gather(*(check(name) for name in names)))
