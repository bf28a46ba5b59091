"""``python -m bench``: CPU per registration and registrations/s against a baseline workflow.

Runs, each on a fresh embedded dev server (``bench/stack.py``) with its own worker subprocess:
the registration once (as deployed, Argon2id included), then ``--pairs`` pairs of the baseline
(``bench/baseline.py``) and the registration with Argon2id stubbed out (``no-argon2id``), every
other pair in reverse order. A run is a warm-up, the throughput batch at ``--concurrency`` in
flight with everyone's CPU read around it, a check that every workflow ended happily, then the
latency batch at 1 in flight (at 20 in flight latency is mostly queueing). The targets are
informational: the exit code is 0 whenever the benchmark ran. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from bench import flood, pending
from bench.load import BaselineScenario, RegistrationScenario, Scenario, count_unfinished, drive
from bench.report import Kind, Report, RunFigures
from bench.stack import (
    Cpu,
    at_least,
    fresh_server,
    generated_keys,
    machine_line,
    peak_rss_bytes,
    progress,
    settings_values,
)
from bench.worker_process import WorkerConfig, started
from common.converter import data_converter
from common.settings import Settings


@dataclass(frozen=True)
class Run:
    kind: Kind
    label: str
    """Its name in the summary, its data folder and its units' prefix: runs share no workflow ids
    or outbox entries."""


def plan(pairs: int) -> list[Run]:
    """The registration first: the invocation's first run ran fastest, so it is in no pair. Then
    the pairs, every other one in reverse, so each kind leads a pair as often as the other. (With
    the baseline always first, the first pair had the lowest ratio in 8 of 9 invocations.)"""
    runs = [Run("registration", "registration")]
    for number in range(1, pairs + 1):
        suffix = "" if number == 1 else f"-{number}"
        pair = [Run("baseline", f"baseline{suffix}"), Run("no-argon2id", f"no-argon2id{suffix}")]
        runs += pair[::-1] if number % 2 == 0 else pair
    return runs


async def measure(
    run: Run,
    env: WorkflowEnvironment,
    server_pid: int,
    root: Path,
    keys: dict[str, str],
    args: argparse.Namespace,
) -> RunFigures:
    values = settings_values(root, run.label, keys)
    settings = Settings(_env_file=None, **values)
    markers = root / run.label / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    client = env.client
    scenario: Scenario = (
        BaselineScenario(client, settings.task_queue, markers)
        if run.kind == "baseline"
        else RegistrationScenario(client, settings, password=secrets.token_urlsafe(18))
    )
    config = WorkerConfig.beside(
        client,
        values,
        markers,
        baseline=run.kind == "baseline",
        stub_argon2id=run.kind == "no-argon2id",
    )
    async with started(config) as worker:
        progress(f"{run.label}: {args.warmup} warm-up, then {args.count} at {args.concurrency}")
        await drive(scenario, [f"{run.label}-w{i}" for i in range(args.warmup)], args.concurrency)
        names = [f"{run.label}-m{i}" for i in range(args.count)]
        before = Cpu.now(server_pid, worker)
        batch = await drive(scenario, names, args.concurrency)
        cpu = Cpu.now(server_pid, worker) - before
        rss = peak_rss_bytes(worker)
        unfinished = await count_unfinished(scenario, names, args.concurrency)
        progress(f"{run.label}: {args.latency_count} at 1 in flight")
        latency_names = [f"{run.label}-l{i}" for i in range(args.latency_count)]
        latency = await drive(scenario, latency_names, 1)
        unfinished += await count_unfinished(scenario, latency_names, 1)
    failures = batch.failures + latency.failures
    if unfinished:
        failures.append(f"{unfinished} workflows did not end in their happy end state")
    units = len(batch.activations)
    return RunFigures(
        run.label, run.kind, units, batch.wall, cpu, rss, latency.activations, failures
    )


def describe(args: argparse.Namespace, load_before: float) -> list[str]:
    """The summary's last lines: what ran, on what, at which commit, how busy the machine was."""

    return [
        f"{args.count} units per run at {args.concurrency} in flight after {args.warmup} warm-up,"
        f" then {args.latency_count} at 1 in flight; payload encryption on; {args.pairs} pair(s)",
        machine_line(load_before),
    ]


async def main_async(args: argparse.Namespace) -> Report:
    load_before = os.getloadavg()[0]
    keys = generated_keys()
    runs = []
    with tempfile.TemporaryDirectory(prefix="registration-bench-") as temp:
        root = Path(temp)
        # The load generator's client uses the same converter as the workers (encryption on).
        converter = data_converter(Settings(_env_file=None, **settings_values(root, "load", keys)))
        for run in plan(args.pairs):
            progress(f"{run.label}: starting a fresh dev server")
            async with fresh_server(root / run.label, converter) as (env, server_pid):
                runs.append(await measure(run, env, server_pid, root, keys, args))
    return Report(runs, describe(args, load_before))


def main() -> None:
    scenarios = {"pending": pending.main, "flood": flood.main}
    if sys.argv[1:2] and sys.argv[1] in scenarios:
        scenarios[sys.argv[1]](sys.argv[2:])
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="CPU per registration and registrations/s against a baseline workflow;"
        " see docs/benchmarks.md.",
    )
    add = parser.add_argument
    add("--count", type=at_least(1), default=500, help="units per run at load (default 500)")
    add("--concurrency", type=at_least(1), default=20, help="units in flight at load (20)")
    add("--warmup", type=at_least(0), default=20, help="units before each run, not counted (20)")
    add("--latency-count", type=at_least(1), default=100, help="units at 1 in flight (100)")
    add(
        "--pairs",
        type=at_least(1),
        default=3,
        help="baseline and no-argon2id runs, in pairs (default 3: one ratio is not a verdict)",
    )
    report = asyncio.run(main_async(parser.parse_args()))
    print(report.text(), flush=True)


if __name__ == "__main__":
    main()
