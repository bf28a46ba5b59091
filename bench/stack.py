"""What every measured run stands on: its settings, a fresh dev server, and CPU/memory accounting.

Shared by the benchmark (``bench/__main__.py``) and the replay profiler (``bench/replay.py``).
Process figures are read from ``/proc`` (Linux only; psutil is not a dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import compileall
import os
import platform
import resource
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from common.temporal import MAX_IN_FLIGHT_UPDATES, dev_server_args, dev_server_path
from workflows import visibility

REPO = Path(__file__).resolve().parents[1]
_TICKS = os.sysconf("SC_CLK_TCK")


def generated_keys() -> dict[str, str]:
    """Fresh keys per invocation, as a deployment would configure them (``tests/stack.py`` makes
    them the same way): nothing is read from or written to ``.data``/``.env``."""

    def urlsafe32() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    return {
        "seal_key": Fernet.generate_key().decode(),
        "code_key": urlsafe32(),
        "id_key": urlsafe32(),
        "encryption_keys": f"bench-1:{urlsafe32()}",
    }


def settings_values(root: Path, label: str, keys: dict[str, str]) -> dict[str, Any]:
    """``Settings`` arguments of one run: embedded providers, payload encryption on, own data."""
    return {
        "data_dir": str(root / label),
        "task_queue": f"bench-{label}",
        "identity_provider": "local",
        "customers_provider": "local",
        "mail_provider": "outbox",
        "encryption": True,
        "search_attributes": True,
        "metrics_bind_address": "127.0.0.1:0",  # a free port: `make run` may hold the default
        **keys,
    }


def compile_sources() -> None:
    """Bytecode for what the workflow sandbox re-imports per workflow (as ``make compile``).

    This environment sets ``PYTHONDONTWRITEBYTECODE``: without bytecode each workflow compiles
    its module from source, 3.6 ms of worker CPU per registration against nothing for the rarely
    edited baseline module, so the comparison would depend on which file was edited last.
    """
    for folder in ("workflows", "activities", "common", "bench"):
        if not compileall.compile_dir(REPO / folder, quiet=1):
            raise RuntimeError(f"cannot compile {REPO / folder}")


@asynccontextmanager
async def fresh_server(
    folder: Path, converter: DataConverter, max_in_flight_updates: int = MAX_IN_FLIGHT_UPDATES
) -> AsyncIterator[tuple[WorkflowEnvironment, int]]:
    """A dev server of its own, started as ``make run`` starts it (SQLite file in WAL mode, search
    attributes registered), and its pid. One per run: a server that has already run a batch is
    slower (~3 ms more server CPU per unit after the baseline's 620 workflows, measured), which
    would let the order of the runs decide part of the comparison."""
    await asyncio.to_thread(compile_sources)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)  # the server inherits stderr as stdout: its banner stays out of the summary
    try:
        env = await WorkflowEnvironment.start_local(
            data_converter=converter,
            dev_server_existing_path=dev_server_path(),
            dev_server_database_filename=str(folder / "temporal.sqlite3"),
            dev_server_extra_args=dev_server_args(max_in_flight_updates),
            search_attributes=visibility.ALL,
        )
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    async with env:
        yield env, _child_pid("temporal")


def _stat(pid: int | str) -> tuple[str, list[str]]:
    """``/proc/<pid>/stat``: the command name and the fields after it (it may hold spaces)."""
    head, _, tail = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    return head.partition("(")[2], tail.split()


def _child_pid(name: str) -> int:
    """The one live child of this process named ``name`` (the SDK does not expose the server's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm, fields = _stat(entry.name)
            except (OSError, IndexError):  # gone meanwhile, or not readable
                continue
            if comm == name and int(fields[1]) == os.getpid():
                found.append(int(entry.name))
    if len(found) != 1:
        raise RuntimeError(f"expected one {name!r} child process, found {found}")
    return found[0]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads included."""
    _, fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process, all its threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """Every core's busy time since boot (``/proc/stat``), in CPU seconds."""
    busy = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in busy[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of a live process."""
    return _status_bytes(pid, "VmHWM")


def rss_bytes(pid: int) -> int:
    """Resident set size now (``VmRSS``) of a live process."""
    return _status_bytes(pid, "VmRSS")


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no {field} for pid {pid}")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of each party; ``Cpu.now(...)`` twice and a subtraction make a window."""

    server: float
    worker: float
    load_generator: float
    machine: float
    """Every core's busy time (``/proc/stat``): what is not ours was taken by other programs."""

    @classmethod
    def now(cls, server_pid: int, worker_pid: int) -> Cpu:
        return cls(
            server=cpu_seconds(server_pid),
            worker=cpu_seconds(worker_pid),
            load_generator=own_cpu_seconds(),
            machine=machine_busy_seconds(),
        )

    def __sub__(self, earlier: Cpu) -> Cpu:
        return Cpu(
            self.server - earlier.server,
            self.worker - earlier.worker,
            self.load_generator - earlier.load_generator,
            self.machine - earlier.machine,
        )

    @property
    def others(self) -> float:
        """CPU seconds other programs (other sessions' tests, the OS) took: the noise."""
        return max(0.0, self.machine - self.server - self.worker - self.load_generator)


def machine_line(load_before: float) -> str:
    """What a summary ends with: the code measured, the machine, and how busy it was."""

    def git(*argv: str) -> str:
        command = ["git", "--no-optional-locks", *argv]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)  # noqa: S603
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " + uncommitted changes"
    return (
        f"code {commit}; {len(os.sched_getaffinity(0))} cores; Python {platform.python_version()},"
        f" temporalio {version('temporalio')}; load average {load_before:.2f} before,"
        f" {os.getloadavg()[0]:.2f} after"
    )


def progress(message: str) -> None:
    """A line on stderr while the benchmark runs (stdout is the report)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def at_least(minimum: int) -> Callable[[str], int]:
    """An ``argparse`` type: an integer no smaller than ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse
