"""One reliability run: the stack's configuration, the chaos it is put through, the load, and the
invariants checked afterwards. The scenarios themselves are in ``test_reliability.py``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from temporalio.client import Client

from bench.stack import own_cpu_seconds
from common.converter import data_converter
from common.settings import Settings
from starter.client import RegistrationClient
from tests.reliability import figures, invariants
from tests.reliability.driver import Driver, Limits, Record, plan
from tests.reliability.harness import (
    Mailbox,
    SimulatorProcess,
    TemporalServer,
    WorkerProcess,
    log_tail,
)

SIZE = int(os.environ.get("RELIABILITY_N") or 24)
"""Registrations per scenario: 24 in CI (``make test``), ``make reliability N=300`` for more."""
SEED = int(os.environ.get("RELIABILITY_SEED") or 16)
OUTAGE_MAX = float(os.environ.get("RELIABILITY_OUTAGE_MAX") or 25)
"""The longest server outage injected (seconds); the first SIGKILL outage is this long."""
LIMITS = Limits(per_code=5, total=10)
MAX_RESENDS = 5
CONCURRENCY = 20
"""Registrations driven at once (a backend's callers)."""
SPACING = 0.2
"""Seconds between the starts of two registrations."""
CHAOS_PAUSE = 6.0
"""Seconds between two chaos events."""


def policy_and_keys(folder: Path) -> dict[str, Any]:
    """``Settings`` values shared by the worker (as environment variables) and the client: the
    keys, a policy whose endings come within minutes, the sweep off (the invariants must hold
    by compensation alone, not because a sweep cleaned up after it)."""

    def urlsafe32() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    return {
        "data_dir": str(folder / "data"),
        "task_queue": "reliability",
        "seal_key": Fernet.generate_key().decode(),
        "code_key": urlsafe32(),
        "id_key": urlsafe32(),
        "encryption_keys": f"rel-1:{urlsafe32()}",
        "max_attempts_per_code": str(LIMITS.per_code),
        "max_attempts_total": str(LIMITS.total),
        "max_resends": str(MAX_RESENDS),
        "resend_interval": "2s",
        "failure_window": "1m",
        "sweep_interval": "off",
        "metrics_bind_address": "",
    }


@dataclass
class Stack:
    folder: Path
    server: TemporalServer
    worker: WorkerProcess
    client: Client
    settings: Settings
    registrations: RegistrationClient
    flooder: RegistrationClient
    simulator: SimulatorProcess | None = None

    def log_tail(self) -> str:
        simulator = [self.simulator.log] if self.simulator else []
        return log_tail(self.server.logs[-2:] + self.worker.logs[-3:] + simulator)

    def processes(self) -> dict[str, Callable[[], float]]:
        """Each process's CPU seconds so far, by name: the service's, the simulator's if there
        is one, and this one's (the load driver with its floods, the mailbox's reads and the
        clients' SDK threads)."""
        found = {"Temporal server": self.server.cpu_seconds, "worker": self.worker.cpu_seconds}
        if self.simulator is not None:
            found[self.simulator.name] = self.simulator.cpu_seconds
        return {**found, "pytest (load driver)": own_cpu_seconds}


@asynccontextmanager
async def stack(
    folder: Path, providers: dict[str, str], simulator: SimulatorProcess | None = None
) -> AsyncIterator[Stack]:
    """Server and worker processes for ``providers`` (``Settings`` field names and values),
    and clients of this process; ``simulator``, if the providers use one, is counted with the
    processes (``Stack.processes``)."""
    values = {**policy_and_keys(folder), **providers}
    server = TemporalServer(folder)
    await server.start()
    environment = {f"REGISTRATION_{name.upper()}": value for name, value in values.items()}
    environment["TEMPORAL_ADDRESS"] = server.address
    worker = WorkerProcess(folder, environment)
    try:
        await worker.start()
        settings = Settings(_env_file=None, **values)
        client = await Client.connect(server.address, data_converter=data_converter(settings))
        yield Stack(
            folder,
            server,
            worker,
            client,
            settings,
            RegistrationClient(client, settings),
            RegistrationClient(client, settings, calls_per_email=None),
            simulator,
        )
    finally:
        await worker.stop()
        await server.stop()


class Chaos:
    """Kills and outages, one at a time, ``CHAOS_PAUSE`` apart: the worker SIGKILLed and started
    again, the server stopped with SIGTERM, the worker again, the server SIGKILLed; each server
    outage 5 s to ``OUTAGE_MAX`` (the first SIGKILL one ``OUTAGE_MAX``), the server then started
    on the same file. ``rounds`` rounds, during the load and, if it ends first, the endings."""

    def __init__(self, stack: Stack, rng: random.Random) -> None:
        self.stack = stack
        self.rng = rng
        self.killed_server = False
        self.rounds = max(1, SIZE // 100)
        """A round per 100 registrations: the load's pace is the outages' (its calls wait for
        the server), so chaos as long as the load lasts would last for ever."""

    async def run(self) -> None:
        server, worker = self.stack.server, self.stack.worker
        steps: list[Callable[[], Awaitable[None]]] = [
            worker.kill,
            lambda: server.outage(signal.SIGTERM, self.rng.uniform(5, OUTAGE_MAX)),
            worker.kill,
            lambda: server.outage(
                signal.SIGKILL,
                self.rng.uniform(5, OUTAGE_MAX) if self.killed_server else OUTAGE_MAX,
            ),
        ]
        for index in range(self.rounds * len(steps)):
            await asyncio.sleep(CHAOS_PAUSE)
            await steps[index % len(steps)]()
            self.killed_server = self.killed_server or index % len(steps) == 3

    def figures(self) -> dict[str, str]:
        server, worker = self.stack.server, self.stack.worker
        outages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in server.outages)
        return {
            "worker SIGKILLs": f"{worker.kills}; exits nobody asked for: {worker.unexpected_exits}",
            "server outages": outages or "none",
        }


async def drive(
    title: str,
    stack: Stack,
    mailbox: Mailbox,
    records_check: Callable[[list[Record]], Awaitable[list[str]]],
    *,
    chaos: bool,
    extra: Callable[[], Awaitable[dict[str, str]]] | None = None,
    domain: str = "example.com",
) -> list[str]:
    """Drive ``SIZE`` registrations (through chaos if asked), wait for every run to end, check
    the invariants, record the figures; the violations. The CPU figures: while the
    registrations are driven, and the whole run (as the wall time: the wait for the endings and
    the checks too)."""
    rng = random.Random(SEED)
    records = plan(SIZE, domain)
    driver = Driver(stack.registrations, stack.flooder, mailbox, LIMITS, rng)
    usage = figures.Usage(stack.processes())
    began = time.monotonic()
    scanning = asyncio.create_task(mailbox.scanning())
    sampling = asyncio.create_task(usage.sampling())
    troublemaker = Chaos(stack, random.Random(SEED + 1))
    chaos_task = asyncio.create_task(troublemaker.run()) if chaos else None
    try:
        await driver.run_all(records, CONCURRENCY, SPACING)
        usage.mark("driving")
        if chaos_task is not None:
            await chaos_task
        violations = await invariants.wait_closed(stack.client, records)
        await _stopped(scanning)
        await mailbox.scan()
        ended = await invariants.endings(stack.client, records)
        violations += invariants.driver_problems(records)
        violations += invariants.ended_as_intended(records, ended)
        violations += invariants.limits_held(records, LIMITS.per_code, LIMITS.total)
        violations += await records_check(records)
        violations += await invariants.mails_per_sequence(
            stack.registrations, mailbox, records, MAX_RESENDS
        )
        violations += invariants.sendings_per_sequence(mailbox, records)
        more = {
            **(await figures.task_waits(stack.client, records)),
            **(troublemaker.figures() if chaos else {}),
            **(await extra() if extra else {}),
        }
    finally:
        for task in (scanning, sampling, chaos_task):
            if task is not None:
                task.cancel()
    more.update(usage.figures(rest="endings"))
    figures.REPORTS.append(
        figures.table(title, records, ended, violations, more, time.monotonic() - began)
    )
    return violations


async def _stopped(task: asyncio.Task[None]) -> None:
    """Cancel a background task and wait for it: an error it ended with is raised here."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
