"""The real stack as separate processes, for the reliability suite (``docs/reliability.md``).

- ``TemporalServer``: ``temporal server start-dev`` as a subprocess on a SQLite file of its own
  (WAL, ``synchronous=full``, the registration's search attributes), as ``make run`` starts it.
  It can be stopped with SIGTERM or SIGKILL and started again on the same file and port.
- ``WorkerProcess``: ``python worker.py`` as a subprocess, configured only by its environment (as
  a deployment configures it), killed with SIGKILL and started again. A worker that exits when
  nobody killed it is started again too, and counted (``unexpected_exits``): the suite reports it.
- ``Mailbox``: what the mail provider delivered, with the time of each delivery: the outbox folder
  (file modification times), or the Hantera simulator's sendings (stamped as they are recorded).

Each process writes its log to a file in the test's folder (one per incarnation); ``log_tail``
quotes the end of them when something goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
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
from common.temporal import dev_server_path, dev_server_sqlite_args
from tests.outbox import CODE_LINE
from tests.simulators.hantera import HanteraSimulator
from workflows import visibility

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "default"
START_TIMEOUT = 120.0
"""Seconds a (re)started process may take to be ready: generous, the 2 cores are shared."""
STOP_TIMEOUT = 30.0
READY_LINE = "ready; Ctrl-C stops the worker"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


class TemporalServer:
    """The dev server on ``folder/temporal.sqlite3``, always on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.database = folder / "temporal.sqlite3"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
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
            *dev_server_sqlite_args(), *attributes,
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
        process.send_signal(signum)
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


class WorkerProcess:
    """``python worker.py`` with ``environment`` (over a cleaned copy of this process's)."""

    def __init__(self, folder: Path, environment: Mapping[str, str]) -> None:
        self.folder = folder
        self.environment = {
            **{
                name: value
                for name, value in os.environ.items()
                if not name.startswith(("REGISTRATION_", "TEMPORAL_"))
            },
            **environment,
        }
        self.process: asyncio.subprocess.Process | None = None
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
            process.send_signal(signum)
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

    def scan(self) -> None:
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
            self.scan()
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

    def scan(self) -> None:
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


class _TimedSendings(list[dict[str, Any]]):
    """The simulator's ``sendings`` list, stamping each sending with the time it was recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: dict[str, Any]) -> None:
        self.times.append(time.time())
        super().append(item)


class SimulatorMailbox(Mailbox):
    """The Hantera simulator's sendings (one per ``Idempotency-Key``)."""

    def __init__(self, sim: HanteraSimulator) -> None:
        super().__init__()
        self.sim = sim
        self._sendings = _TimedSendings()
        sim.sendings = self._sendings
        self._read = 0

    def scan(self) -> None:
        sendings = self._sendings
        for index in range(self._read, len(sendings)):
            sending = sendings[index]
            address = str(sending["to"]).lower()
            self.by_recipient[address].append(
                Mail(
                    address,
                    str(sending["category"]),
                    code_in(str(sending.get("plainText") or "")),
                    sendings.times[index],
                    sending.get("idempotency_key"),
                )
            )
        self._read = len(sendings)
