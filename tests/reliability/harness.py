"""The real stack as separate processes, for the reliability suite (``docs/reliability.md``).

- ``TemporalServer``: ``temporal server start-dev`` as a subprocess on a SQLite file of its own
  (WAL, ``synchronous=full``, the registration's search attributes), as ``make run`` starts it.
  It can be stopped with SIGTERM or SIGKILL and started again on the same file and port.
- ``WorkerProcess``: ``python worker.py`` as a subprocess, configured only by its environment (as
  a deployment configures it), killed with SIGKILL and started again. A worker that exits when
  nobody killed it is started again too, and counted (``unexpected_exits``): the suite reports it.
- ``SimulatorProcess``: a vendor simulator's standalone mode (``python -m tests.simulators.<name>``)
  as a process of its own, so that its CPU is not the load driver's; the test reads its state
  through the simulator's ``/_sim/`` endpoints.
- ``Mailbox``: what the mail provider delivered, with the time of each delivery: the outbox folder
  (file modification times), or the Hantera simulator's sendings (stamped as they are recorded).

Each process writes its log to a file in the test's folder (one per incarnation); ``log_tail``
quotes the end of them when something goes wrong. Each counts the CPU seconds its incarnations
used (``cpu_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client

from activities.rendering import ACTIVATION
from bench.stack import cpu_seconds
from common.temporal import dev_server_args, dev_server_path
from tests.outbox import CODE_LINE
from tests.ports import free_port
from tests.simulators.hantera import Inspection
from tests.simulators.loopback import served
from workflows import visibility

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "default"
START_TIMEOUT = 120.0
"""Seconds a (re)started process may take to be ready: generous, the 2 cores are shared."""
STOP_TIMEOUT = 30.0
READY_LINE = "ready; Ctrl-C stops the worker"


def log_tail(paths: Iterable[Path], lines: int = 40) -> str:
    """The last ``lines`` lines of each log, headed by its name."""
    parts = []
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(parts)


async def _ended(process: asyncio.subprocess.Process, seconds: float) -> bool:
    try:
        await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        return False
    return True


class _Child:
    """A subprocess that may be stopped and started again, and the CPU its incarnations used."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self._cpu_of_ended = 0.0
        self._counted: int | None = None
        """The pid whose CPU is in ``_cpu_of_ended`` already (signalled, maybe not yet gone)."""

    def _live_cpu(self) -> float:
        process = self.process
        if process is None or process.returncode is not None or process.pid == self._counted:
            return 0.0
        try:
            return cpu_seconds(process.pid)
        except (OSError, IndexError, ValueError):  # gone meanwhile
            return 0.0

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of every incarnation so far: a stopped one's up to the
        signal that stopped it (what it used stopping is left out, as is all of one that
        exited on its own), the live one's up to now."""
        return self._cpu_of_ended + self._live_cpu()

    def _signal(self, process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
        """Send ``signum``, its CPU so far counted first."""
        if process is self.process:
            self._cpu_of_ended += self._live_cpu()
            self._counted = process.pid
        process.send_signal(signum)


class TemporalServer(_Child):
    """The dev server on ``folder/temporal.sqlite3``, always on the same port."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.database = folder / "temporal.sqlite3"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.logs: list[Path] = []
        self.outages: list[tuple[str, float]] = []
        """Each outage injected: the signal's name and how long the server was down (s)."""

    def args(self) -> list[str]:
        """What ``WorkflowEnvironment.start_local`` passes, with a file and without the UI."""
        attributes = [
            arg
            for key in visibility.ALL
            for arg in ("--search-attribute", f"{key.name}={key._metadata_type}")
        ]
        return [
            "server", "start-dev", "--ip", "127.0.0.1", "--port", str(self.port),
            "--namespace", NAMESPACE, "--headless", "--log-level", "warn",
            "--db-filename", str(self.database),
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecutionAsyncAccepted=true",
            *dev_server_args(), *attributes,
        ]  # fmt: skip

    async def start(self) -> None:
        log = self.folder / f"server-{len(self.logs) + 1}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                dev_server_path(), *self.args(), stdout=out, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        await self._serving()

    async def _serving(self) -> None:
        """Until the namespace answers (the port opens before it does)."""
        deadline = time.monotonic() + START_TIMEOUT
        client: Client | None = None
        while True:
            assert self.process is not None
            if self.process.returncode is not None:
                raise RuntimeError(f"the dev server exited:\n{log_tail(self.logs[-1:])}")
            try:
                client = client or await Client.connect(self.address, namespace=NAMESPACE)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=NAMESPACE)
                )
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def stop(self, signum: signal.Signals = signal.SIGTERM) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        self._signal(process, signum)
        if not await _ended(process, STOP_TIMEOUT):
            process.kill()
            await process.wait()

    async def outage(self, signum: signal.Signals, seconds: float) -> None:
        """Stop with ``signum``, stay down ``seconds`` (counted from the signal), start again on
        the same file."""
        began = time.monotonic()
        await self.stop(signum)
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
        await self.start()
        self.outages.append((signum.name, time.monotonic() - began))


class WorkerProcess(_Child):
    """``python worker.py`` with ``environment`` (over a cleaned copy of this process's)."""

    def __init__(self, folder: Path, environment: Mapping[str, str]) -> None:
        super().__init__()
        self.folder = folder
        self.environment = {
            **{
                name: value
                for name, value in os.environ.items()
                if not name.startswith(("REGISTRATION_", "TEMPORAL_"))
            },
            **environment,
        }
        self.logs: list[Path] = []
        self.kills = 0
        self.unexpected_exits: list[int] = []
        """Exit codes of workers that ended without being told to."""
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start and wait for its ``ready`` line; one that exits first (e.g. the server is down
        at that moment: exit 3) is started again until ``START_TIMEOUT``."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            log = self.folder / f"worker-{len(self.logs) + 1}.log"
            self.logs.append(log)
            with log.open("wb") as out:
                self.process = await asyncio.create_subprocess_exec(
                    sys.executable, str(REPO / "worker.py"), cwd=self.folder,
                    env=self.environment, stdout=out, stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            while self.process.returncode is None and READY_LINE not in log.read_text(
                errors="replace"
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start:\n{log_tail(self.logs[-1:])}")
                await asyncio.sleep(0.2)
            if self.process.returncode is None:
                self._watch = asyncio.create_task(self._watched(self.process))
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker exited at start:\n{log_tail(self.logs[-1:])}")
            await asyncio.sleep(1.0)

    async def _watched(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if not self._stopping:
            self.unexpected_exits.append(code)
            await self.start()

    async def _end(self, signum: signal.Signals) -> None:
        process, watch = self.process, self._watch
        if process is None or process.returncode is not None:
            return
        self._stopping = True
        try:
            self._signal(process, signum)
            if not await _ended(process, STOP_TIMEOUT):
                process.kill()
                await process.wait()
            if watch is not None:
                await watch
        finally:
            self._stopping = False

    async def kill(self) -> None:
        """SIGKILL, then start a new one (what a crashed host's supervisor does)."""
        await self._end(signal.SIGKILL)
        self.kills += 1
        await self.start()

    async def stop(self) -> None:
        await self._end(signal.SIGTERM)


class SimulatorProcess(_Child):
    """``python -m <module> --port 0 <args>``: a simulator run alone (its ``main``, which
    ``serve_forever``s), in the repository as working directory. ``base_url`` and ``env`` (the
    ``REGISTRATION_<VENDOR>_*`` variables to use) are what it printed."""

    def __init__(self, folder: Path, module: str, args: Iterable[str] = ()) -> None:
        super().__init__()
        self.folder = folder
        self.module = module
        self.args = list(args)
        self.name = f"{module.rpartition('.')[2].capitalize()} simulator"
        self.log = folder / f"{module.rpartition('.')[2]}-simulator.log"
        self.base_url = ""
        self.env: dict[str, str] = {}

    async def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", self.module, "--port", "0", *self.args, cwd=REPO,
                stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while (found := served(self.log.read_text(errors="replace"))) is None:
            if self.process.returncode is not None or time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"{self.module} did not start:\n{log_tail([self.log])}")
            await asyncio.sleep(0.1)
        self.base_url, self.env = found

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        self._signal(process, signal.SIGTERM)
        if not await _ended(process, STOP_TIMEOUT):
            process.kill()
            await process.wait()


# Mail ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    to: str
    """Lower case."""
    category: str
    code: str | None
    """The 6-digit line of the text part, if any."""
    at: float
    """When it was delivered (epoch seconds)."""
    key: str | None = None
    """The idempotency key, where the provider shows it (Hantera's sendings)."""


@dataclass
class Mailbox:
    """Every mail delivered so far by recipient, refreshed by ``scan``."""

    by_recipient: dict[str, list[Mail]] = field(default_factory=lambda: defaultdict(list))

    async def scan(self) -> None:
        """Take in what was delivered since the last scan."""
        raise NotImplementedError

    def to(self, email: str) -> list[Mail]:
        return list(self.by_recipient.get(email.lower(), []))

    def activations(self, email: str) -> list[Mail]:
        return [mail for mail in self.to(email) if mail.category == ACTIVATION]

    async def wait_for_activation(self, email: str, count: int, seconds: float) -> list[Mail]:
        """The activation mails to ``email`` once there are at least ``count``, oldest first;
        ``TimeoutError`` after ``seconds``."""
        deadline = time.monotonic() + seconds
        while len(found := self.activations(email)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} activation mail(s) to {email} within {seconds:g} s")
            await asyncio.sleep(0.05)
        return found

    async def scanning(self, every: float = 0.05) -> None:
        """Scan until cancelled (a background task)."""
        while True:
            await self.scan()
            await asyncio.sleep(every)


def _text_part(data: bytes) -> tuple[Any, str]:
    message = message_from_bytes(data, policy=compat32)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return message, payload.decode(part.get_content_charset() or "utf-8")
    return message, ""


def code_in(text: str) -> str | None:
    return next((line for line in text.splitlines() if CODE_LINE.fullmatch(line)), None)


_ADDRESS = re.compile(r"<([^>]+)>\s*$")


class OutboxMailbox(Mailbox):
    """The ``outbox`` provider's folder: each ``.eml`` read once, timed by its modification."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self._seen: set[str] = set()

    async def scan(self) -> None:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.endswith(".eml") or entry.name in self._seen:
                continue
            self._seen.add(entry.name)
            at = entry.stat().st_mtime_ns / 1e9
            message, text = _text_part(Path(entry.path).read_bytes())
            to = str(message["To"])
            found = _ADDRESS.search(to)
            address = (found.group(1) if found else to).strip().lower()
            self.by_recipient[address].append(
                Mail(address, str(message["X-Category"]), code_in(text), at)
            )
        for mails in self.by_recipient.values():
            mails.sort(key=lambda mail: mail.at)


class SimulatorMailbox(Mailbox):
    """The Hantera simulator's sendings (one per ``Idempotency-Key``), read from its process
    (``Inspection``), each timed by when the simulator recorded it."""

    WAIT = 5.0
    """Seconds a read in ``scanning`` waits at the simulator for the next sending."""

    def __init__(self, inspection: Inspection) -> None:
        super().__init__()
        self.inspection = inspection
        self._read = 0

    async def scan(self, wait: float = 0.0) -> None:
        for sending in await self.inspection.sendings(self._read, wait):
            address = str(sending["to"]).lower()
            self.by_recipient[address].append(
                Mail(
                    address,
                    str(sending["category"]),
                    code_in(str(sending.get("plainText") or "")),
                    float(sending["recordedAt"]),
                    sending.get("idempotency_key"),
                )
            )
            self._read += 1

    async def scanning(self, every: float = 0.0) -> None:
        """Read each sending as it is recorded (the simulator answers a waiting read then)."""
        while True:
            await self.scan(self.WAIT)
            if every:
                await asyncio.sleep(every)
