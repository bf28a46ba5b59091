"""``python -m bench.shapes``: what the shape of the activation costs, with no work in it.

For each variant of ``bench/shape_workflow.py`` it prints the update's latency at 1 in flight and,
at 10 in flight, units per second and the Temporal server's CPU per unit (a unit is a start, the
update, and the workflow's result). The server is the embedded dev server started as ``make run``
starts it (SQLite file, WAL); the worker runs in this process with the sandbox, like the real one.
It answers questions such as "what would moving the welcome mail off the update's path cost?"
(docs/benchmarks.md). Figures only, no targets.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker

from bench.procstat import cpu_seconds
from bench.report import percentile
from bench.server import fresh_server
from bench.shape_workflow import Shape, ShapeWorkflow, noop
from worker import SANDBOX

TASK_QUEUE = "shapes"
SETTLE_SECONDS = 0.1


async def unit(client: Client, shape: Shape, settle: float = 0.0) -> float:
    """Start, update (timed), wait for the result; returns the update's seconds. With ``settle``
    the update waits that long after the start, so that it finds the workflow waiting for it (as
    a code typed in by a person does) instead of queued behind the workflow's first task."""
    handle = await client.start_workflow(
        ShapeWorkflow.run, shape, id=f"shape-{uuid.uuid4()}", task_queue=TASK_QUEUE
    )
    await asyncio.sleep(settle)
    began = time.perf_counter()
    await handle.execute_update(ShapeWorkflow.submit, shape)
    took = time.perf_counter() - began
    await handle.result()
    return took


async def latency_ms(client: Client, shape: Shape, count: int) -> list[float]:
    return [await unit(client, shape, SETTLE_SECONDS) * 1000 for _ in range(count)]


async def throughput(
    client: Client, shape: Shape, count: int, concurrency: int, server_pid: int
) -> tuple[float, float]:
    """Units per second and server CPU milliseconds per unit, ``concurrency`` in flight."""
    pending = iter(range(count))

    async def lane() -> None:
        for _ in pending:
            await unit(client, shape)

    cpu, began = cpu_seconds(server_pid), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    return count / wall, (cpu_seconds(server_pid) - cpu) / count * 1000


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="registration-shapes-") as temp:
        async with fresh_server(Path(temp), DataConverter.default) as (env, server_pid):
            async with Worker(
                env.client,
                task_queue=TASK_QUEUE,
                workflows=[ShapeWorkflow],
                activities=[noop],
                workflow_runner=SANDBOX,
            ):
                print(
                    f"{'shape':22}{'update p50 ms':>15}{'p95':>8}"
                    f"{'units/s':>10}{'server ms/unit':>16}   ({args.concurrency} in flight)"
                )
                for shape in Shape:
                    await latency_ms(env.client, shape, args.warmup)
                    ms = await latency_ms(env.client, shape, args.count)
                    per_s, server_ms = await throughput(
                        env.client, shape, args.units, args.concurrency, server_pid
                    )
                    print(
                        f"{shape.value:22}{statistics.median(ms):15.1f}{percentile(ms, 95):8.1f}"
                        f"{per_s:10.1f}{server_ms:16.1f}",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shapes", description=__doc__)
    parser.add_argument("--count", type=int, default=50, help="updates timed at 1 in flight")
    parser.add_argument("--warmup", type=int, default=10, help="units before each measurement")
    parser.add_argument("--units", type=int, default=200, help="units for the throughput figure")
    parser.add_argument("--concurrency", type=int, default=10, help="in flight for throughput")
    asyncio.run(run(parser.parse_args()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
