"""The figures of a run: collected per scenario, printed at the end of the pytest session
(``conftest.py``) by ``make test`` and ``make reliability`` alike. Besides the run's own, whose
CPU its time was (``Usage``): each process's CPU seconds, the other programs' on the machine, and
the load average."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.stack import machine_busy_seconds
from tests.reliability.driver import STATE, Record
from tests.reliability.harness import REPO

REPORTS: list[str] = []
"""One table per scenario run in this session."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-int(fraction * len(ordered) * 1000) // 1000))
    return ordered[min(rank, len(ordered)) - 1]


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return (
        f"p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s,"
        f" max {max(values):.2f} s (n={len(values)})"
    )


def commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return found.stdout.strip()


class Usage:
    """Whose CPU the time was: CPU seconds of ``processes`` (name: a function giving its CPU
    seconds so far) and of the whole machine (``/proc/stat``: every core's busy time; what is
    not the processes' is other programs'), from now to each ``mark`` and from one mark to the
    next; and the 1-minute load average, sampled meanwhile (``sampling``, a background task)."""

    EVERY = 5.0
    """Seconds between two samples of the load average."""

    def __init__(self, processes: Mapping[str, Callable[[], float]]) -> None:
        self.processes = dict(processes)
        self.marks = [("", self._now())]
        self.loads = [os.getloadavg()[0]]

    def _now(self) -> tuple[float, dict[str, float], float]:
        cpu = {name: read() for name, read in self.processes.items()}
        return time.monotonic(), cpu, machine_busy_seconds()

    def mark(self, name: str) -> None:
        """The end of a phase called ``name``, which began at the previous mark (or at the
        start)."""
        self.marks.append((name, self._now()))

    async def sampling(self) -> None:
        while True:
            await asyncio.sleep(self.EVERY)
            self.loads.append(os.getloadavg()[0])

    def figures(self, rest: str = "the rest") -> dict[str, str]:
        """A row per phase (the one since the last mark called ``rest``), one for the whole
        run if there were marks, then the load average."""
        now = self._now()
        spans = [(name, before, after) for (_, before), (name, after)
                 in itertools.pairwise([*self.marks, (rest, now)])]  # fmt: skip
        if len(spans) > 1:
            spans.append(("whole run", self.marks[0][1], now))
        rows = {}
        cores = len(os.sched_getaffinity(0))
        for name, (began, cpu_before, machine_before), (ended, cpu, machine) in spans:
            wall = max(ended - began, 1e-9)
            used = {party: cpu[party] - cpu_before[party] for party in cpu}
            busy = machine - machine_before
            used["other programs"] = max(0.0, busy - sum(used.values()))
            shares = [f"{party} {seconds:.1f} s ({seconds / wall:.2f} cores)"
                      for party, seconds in used.items()]  # fmt: skip
            rows[f"CPU, {name} ({wall:.0f} s)"] = (
                f"{', '.join(shares)}; busy {busy / wall:.2f} of {cores} cores"
            )
        loads = [*self.loads, os.getloadavg()[0]]
        rows["load average (1 min)"] = (
            f"{loads[0]:.2f} at the start, mean {sum(loads) / len(loads):.2f}, max"
            f" {max(loads):.2f}, {loads[-1]:.2f} at the end"
        )
        return rows


async def task_waits(client: Client, records: Iterable[Record]) -> dict[str, str]:
    """How long workflow tasks waited at the server for the worker to take them (scheduled to
    started, from each run's history): a run's first task, which a new registration waits on
    before anything else happens, and the later ones. A long first wait with short later ones is
    the worker's polls serving its sticky queue before the task queue."""
    first: list[float] = []
    later: list[float] = []
    for record in records:
        history = await client.get_workflow_handle(record.registration_id).fetch_history()
        waits, scheduled = [], None
        for event in history.events:
            at = event.event_time.ToDatetime()
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled = at
            elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and scheduled:
                waits.append((at - scheduled).total_seconds())
        first += waits[:1]
        later += waits[1:]
    return {"workflow task waits": f"first {spread(first)}; later {spread(later)}"}


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"


def table(
    title: str,
    records: Iterable[Record],
    ended: dict[str, str],
    violations: Sequence[str],
    extra: dict[str, str],
    seconds: float,
) -> str:
    records = list(records)
    meant = Counter(r.ending.value for r in records)
    resent = sum(r.resend for r in records)
    as_meant = sum(1 for r in records if ended.get(r.email) == STATE[r.ending].value)
    to_mail = [r.first_mail_at - r.registered_at for r in records
               if r.first_mail_at and r.registered_at]  # fmt: skip
    mail_to_pending = [r.pending_at - r.first_mail_at for r in records
                       if r.pending_at and r.first_mail_at]  # fmt: skip
    to_active = [r.active_at - r.registered_at for r in records
                 if r.active_at and r.registered_at]  # fmt: skip
    retries: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    floods = 0
    for record in records:
        retries.update(record.retries)
        for flood in record.floods:
            answers.update(flood)
            floods += 1
    ending_counts = counts(Counter(ended.values()))
    rows = [
        ("registrations", f"{len(records)}: {counts(meant)} ({resent} activated after a resend)"),
        ("ended as intended", f"{as_meant} / {len(records)}; ended {ending_counts}"),
        ("register -> first mail", spread(to_mail)),
        ("first mail -> takes codes", spread(mail_to_pending)),
        ("register -> active", spread(to_active)),
        ("client retries", counts(retries)),
        ("brute force", f"{floods} floods of 50 parallel wrong codes; answers: {counts(answers)}"),
        *extra.items(),
        ("invariant violations", str(len(violations))),
        ("wall time", f"{seconds:.0f} s"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"{title} (commit {commit()})"]
    lines += [f"  {name.ljust(width)}  {value}" for name, value in rows]
    lines += [f"  ! {violation}" for violation in violations[:50]]
    return "\n".join(lines)
