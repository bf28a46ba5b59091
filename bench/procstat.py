"""CPU time and memory of processes, read from ``/proc`` (Linux only; psutil is not a dependency).

The benchmark needs three numbers per process for a time window: CPU seconds of the Temporal dev
server (a child started by the SDK, whose pid the SDK does not expose), of the worker subprocess
and of this process, plus the worker's and this process's peak RSS. ``/proc/<pid>/stat`` has the
CPU, ``VmHWM`` in ``/proc/<pid>/status`` the peak (this process's is reset before each run); the
whole machine's busy time (``/proc/stat``) shows how much CPU other programs took meanwhile, so a
run on a loaded machine says so.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TICKS = os.sysconf("SC_CLK_TCK")
_UTIME, _STIME = 11, 12
"""Indexes of utime and stime in the fields after the ``(comm)`` of ``/proc/<pid>/stat``."""
_PPID = 1


def _stat_fields(pid: int) -> tuple[str, list[str]]:
    """The command name and the fields after it (the name may contain spaces and parentheses)."""
    text = (_PROC / str(pid) / "stat").read_text()
    head, _, tail = text.rpartition(")")
    return head.partition("(")[2], tail.split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads included."""
    _, fields = _stat_fields(pid)
    return (int(fields[_UTIME]) + int(fields[_STIME])) / _TICKS


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads, the SDK's Rust threads too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_self_peak_rss() -> bool:
    """Start this process's peak RSS afresh (``VmHWM`` := current RSS), so a peak read later
    belongs to what ran since: the load generator runs every run, and the Argon2id calibration,
    in one process. Writing ``5`` to ``clear_refs`` does it (Linux 4.0 and later); ``False`` if
    the kernel or a sandbox refuses, and the peak then is the process's so far."""
    try:
        (_PROC / "self" / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def self_peak_rss_bytes() -> int:
    """Peak RSS of this process since it started or since ``reset_self_peak_rss``."""
    return peak_rss_bytes(os.getpid())


def peak_rss_bytes(pid: int) -> int:
    """Peak resident set size (``VmHWM``) of a live process, in bytes."""
    for line in (_PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"no VmHWM for pid {pid}")


def child_pids(name: str) -> list[int]:
    """Live children of this process whose command name is ``name`` (e.g. ``temporal``)."""
    me = os.getpid()
    found = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, fields = _stat_fields(int(entry.name))
        except (OSError, IndexError):  # gone meanwhile, or not readable
            continue
        if comm == name and int(fields[_PPID]) == me:
            found.append(int(entry.name))
    return found


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot (``/proc/stat``)."""
    first = (_PROC / "stat").read_text().splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers may narrow)."""
    return len(os.sched_getaffinity(0))


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds of each party at one instant; two of them make a window."""

    server: float
    worker: float
    load_generator: float
    machine: float

    @classmethod
    def take(cls, server_pid: int, worker_pid: int) -> CpuSnapshot:
        return cls(
            server=cpu_seconds(server_pid),
            worker=cpu_seconds(worker_pid),
            load_generator=self_cpu_seconds(),
            machine=machine_busy_seconds(),
        )

    def __sub__(self, earlier: CpuSnapshot) -> CpuSnapshot:
        return CpuSnapshot(
            server=self.server - earlier.server,
            worker=self.worker - earlier.worker,
            load_generator=self.load_generator - earlier.load_generator,
            machine=self.machine - earlier.machine,
        )

    @property
    def ours(self) -> float:
        return self.server + self.worker + self.load_generator

    @property
    def others(self) -> float:
        """CPU the rest of the machine used in the window (other tests, the OS): the noise."""
        return max(0.0, self.machine - self.ours)
