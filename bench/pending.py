"""``python -m bench pending --n N``: activation latency with N registrations pending.

One dev server and one worker subprocess, as ``python -m bench`` sets them up (``bench/stack.py``,
``bench/worker_process.py``). After a warm-up, two phases of the same shape: start registrations
(``--concurrency`` in flight, each until its code is mailed), wait until the worker is idle,
then submit the codes of ``--sample`` of them one at a time, timing each activation and reading
the server's and the worker's CPU around the lot:

1. **empty**: ``--sample`` registrations on the otherwise empty server;
2. **pending**: ``--n`` registrations, then a random ``--sample`` of them activated while the
   rest stay pending.

Then the memory (worker and server RSS, now and peak), the history of a pending registration
(events and bytes, from a sample) and the server's database size. CPU per activation is the
figure to trust on a shared machine; the latency ratio is the target's. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from bench.load import RegistrationScenario, count_unfinished, drive
from bench.report import MIB, TARGET_RSS_MIB, percentile_ms
from bench.stack import (
    Cpu,
    at_least,
    cpu_seconds,
    fresh_server,
    generated_keys,
    machine_line,
    peak_rss_bytes,
    progress,
    rss_bytes,
    settings_values,
)
from bench.worker_process import WorkerConfig, started
from common.converter import data_converter
from common.settings import Settings

TARGET_RATIO = 1.3
"""Activation p50 with N pending over the empty server's (issue 22, at N = 20,000)."""
HISTORY_SAMPLE = 20
IDLE_CORE_SHARE = 0.05
"""The worker counts as idle once it uses less than this share of a core over a second."""


@dataclass
class Activations:
    label: str
    seconds: list[float]
    cpu: Cpu
    wall: float
    failures: list[str]

    def cpu_ms(self, seconds: float) -> float:
        return seconds / len(self.seconds) * 1000 if self.seconds else float("nan")

    def row(self) -> str:
        p50, p95 = percentile_ms(self.seconds, 50), percentile_ms(self.seconds, 95)
        server, worker = self.cpu_ms(self.cpu.server), self.cpu_ms(self.cpu.worker)
        return (
            f"  {self.label:22} {p50:7.1f} {p95:7.1f} {server:9.1f} {worker:9.1f}"
            f"   {self.cpu.others / self.wall:.2f} cores"
        )


async def idle(worker: int, limit: float = 120.0) -> None:
    """Until the worker is idle (its backlog of workflow tasks done), at most ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(worker)
        await asyncio.sleep(1.0)
        if cpu_seconds(worker) - before < IDLE_CORE_SHARE:
            return


async def started_and_mailed(
    scenario: RegistrationScenario, names: list[str], concurrency: int
) -> list[str]:
    """Start every registration, ``concurrency`` in flight, each until its code is mailed: the
    starts keep the pace at which the worker mails codes, as a steady sign-up rate does. (Starts
    faster than the worker's pace pile up as a backlog of workflow tasks: the overload case,
    docs/capacity.md.) The failures."""
    gate = asyncio.Semaphore(concurrency)
    failures: list[str] = []
    done = 0

    async def start(name: str) -> None:
        nonlocal done
        async with gate:
            try:
                await scenario.start(name)
                await scenario.mailed(name)
            except Exception as err:  # counted and reported; the run goes on
                failures.append(f"{name}: {type(err).__name__}: {err}")
            done += 1
            if done % 1000 == 0:
                progress(f"{done} of {len(names)} started and mailed")

    await asyncio.gather(*(start(name) for name in names))
    return failures


async def activations(
    label: str, scenario: RegistrationScenario, names: list[str], server: int, worker: int
) -> Activations:
    """The codes of ``names`` submitted one at a time, CPU read around them all."""
    before, began = Cpu.now(server, worker), time.perf_counter()
    seconds: list[float] = []
    failures: list[str] = []
    for name in names:
        try:
            seconds.append(await scenario.activate(name))
        except Exception as err:  # counted and reported; the run goes on
            failures.append(f"{name}: {type(err).__name__}: {err}")
    cpu, wall = Cpu.now(server, worker) - before, time.perf_counter() - began
    return Activations(label, seconds, cpu, wall, failures)


async def history_size(client: Client, scenario: RegistrationScenario, names: list[str]) -> str:
    """Mean events and bytes (serialized events, encrypted payloads) of the names' histories."""
    events, sizes = [], []
    for name in names:
        history = await client.get_workflow_handle(scenario.workflow_id(name)).fetch_history()
        events.append(len(history.events))
        sizes.append(sum(event.ByteSize() for event in history.events))
    return f"{statistics.mean(events):.0f} events, {statistics.mean(sizes) / 1000:.1f} KB"


def database_bytes(folder: Path) -> int:
    """The dev server's SQLite file with its WAL."""
    files = [folder / f"temporal.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]
    return sum(path.stat().st_size for path in files if path.exists())


async def run(args: argparse.Namespace) -> list[str]:
    load_before = os.getloadavg()[0]
    rng = random.Random(args.seed)  # noqa: S311 (which registrations to time, no secret)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="registration-pending-") as temp:
        root = Path(temp)
        values = settings_values(root, "pending", generated_keys())
        if args.cache_size is not None:
            values["worker_cache_size"] = args.cache_size
        values["workflow_sandbox"] = args.sandbox
        settings = Settings(_env_file=None, **values)
        async with fresh_server(root / "server", data_converter(settings)) as (env, server):
            scenario = RegistrationScenario(env.client, settings, secrets.token_urlsafe(18))
            config = WorkerConfig.beside(
                env.client, values, root / "markers", stub_argon2id=args.no_argon2id
            )
            async with started(config) as worker:
                progress(f"warm-up: {args.warmup}")
                warm = await drive(scenario, [f"w{i}" for i in range(args.warmup)], 5)
                progress(f"empty: {args.sample} started, then activated one at a time")
                empty_names = [f"e{i}" for i in range(args.sample)]
                failures = warm.failures + await started_and_mailed(
                    scenario, empty_names, args.concurrency
                )
                await idle(worker)
                empty = await activations("empty server", scenario, empty_names, server, worker)

                progress(f"pending: {args.n} started at {args.concurrency} in flight")
                names = [f"p{i}" for i in range(args.n)]
                empty_database = database_bytes(root / "server")
                before, began = Cpu.now(server, worker), time.perf_counter()
                failures += await started_and_mailed(scenario, names, args.concurrency)
                start_cpu, start_wall = (
                    Cpu.now(server, worker) - before,
                    time.perf_counter() - began,
                )
                await idle(worker)
                worker_rss, server_rss = rss_bytes(worker), rss_bytes(server)
                sample = rng.sample(names, args.sample)
                still_pending = rng.sample(sorted(set(names) - set(sample)), HISTORY_SAMPLE)
                history = await history_size(env.client, scenario, still_pending)
                progress(f"pending: {args.sample} of them activated one at a time")
                busy = await activations(f"{args.n} pending", scenario, sample, server, worker)
                unfinished = await count_unfinished(scenario, empty_names + sample, 20)
                worker_rss = max(worker_rss, rss_bytes(worker))
                worker_peak, server_peak = peak_rss_bytes(worker), peak_rss_bytes(server)
            database = database_bytes(root / "server")

    failures += empty.failures + busy.failures
    if unfinished:
        failures.append(f"{unfinished} activated registrations did not end active")
    ratio = percentile_ms(busy.seconds, 50) / percentile_ms(empty.seconds, 50)
    lines += [
        f"{args.n} registrations started and mailed in {start_wall:.0f} s"
        f" ({args.n / start_wall:.1f}/s); CPU per registration: server"
        f" {start_cpu.server / args.n * 1000:.1f} ms, worker {start_cpu.worker / args.n * 1000:.1f}"
        f" ms; other programs {start_cpu.others / start_wall:.2f} cores",
        f"activation at 1 in flight, {args.sample} each:  p50 ms  p95 ms  server CPU"
        "  worker CPU (ms per activation)  other CPU",
        empty.row(),
        busy.row(),
        f"  p50 ratio {ratio:.2f} (target <= {TARGET_RATIO}:"
        f" {'PASS' if ratio <= TARGET_RATIO else 'MISS'})",
        f"worker RSS {worker_rss / MIB:.0f} MiB, peak {worker_peak / MIB:.0f} MiB (target <"
        f" {TARGET_RSS_MIB:.0f}: {'PASS' if worker_peak / MIB < TARGET_RSS_MIB else 'MISS'});"
        f" server RSS {server_rss / MIB:.0f} MiB, peak {server_peak / MIB:.0f} MiB",
        f"pending registration's history: {history} (mean of {HISTORY_SAMPLE})",
        f"database {database / MIB:.1f} MiB; {(database - empty_database) / args.n / 1000:.1f} KB"
        f" per pending registration (growth over the pending phase)",
        f"failures: {len(failures)}" + (f", first: {failures[:3]}" if failures else ""),
        "",
        f"--n {args.n} --sample {args.sample} --concurrency {args.concurrency}"
        f"{' --no-argon2id' if args.no_argon2id else ''};"
        f" worker cache {settings.worker_cache_size},"
        f" sandbox {'on' if settings.workflow_sandbox else 'off'}; payload encryption on",
        machine_line(load_before),
    ]
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench pending",
        description="Activation latency with N registrations pending against an empty server;"
        " see docs/benchmarks.md.",
    )
    add = parser.add_argument
    add("--n", type=at_least(1), default=20_000, help="registrations left pending (20,000)")
    add("--sample", type=at_least(2), default=100, help="activations timed per phase (100)")
    add(
        "--concurrency",
        type=at_least(1),
        default=20,
        help="registrations in flight, each until its code is mailed (20)",
    )
    add("--warmup", type=at_least(0), default=20, help="registrations before, not counted (20)")
    add("--cache-size", type=at_least(2), help="REGISTRATION_WORKER_CACHE_SIZE of the worker")
    add(
        "--sandbox",
        action="store_true",
        help="REGISTRATION_WORKFLOW_SANDBOX=true in the worker (docs/capacity.md)",
    )
    add("--seed", type=int, default=None, help="of the random sample")
    add(
        "--no-argon2id",
        action="store_true",
        help="a constant password hash in the worker: starts N faster, RSS without Argon2id",
    )
    args = parser.parse_args(argv)
    if args.sample + HISTORY_SAMPLE > args.n:
        parser.error(f"--n must be at least --sample + {HISTORY_SAMPLE}")
    print("\n".join(asyncio.run(run(args))), flush=True)
