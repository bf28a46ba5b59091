"""``python -m bench.api``: the start call through the HTTP API against the Python client, in the
same run: registrations started per second and the start's p50/p99.

One fresh embedded dev server, one worker subprocess (Argon2id stubbed, as in ``no-argon2id``:
hashing is the worker's and is not what is compared) and the API as its own process
(``python -m starter.http``, as deployed, rate limits out of the way). Rounds alternate the
order (client then API, API then client); each round is a throughput batch at ``--concurrency``
in flight, then ``--latency-count`` starts one at a time. Only the start is timed; the
registrations it starts are left pending. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.report import percentile_ms
from bench.stack import REPO, at_least, fresh_server, generated_keys, progress, settings_values
from bench.worker_process import WorkerConfig, started
from common.converter import data_converter
from common.settings import Settings, env_variable
from starter.client import RegistrationClient

Start = Callable[[str], Awaitable[None]]


@contextlib.asynccontextmanager
async def api_process(
    values: dict[str, Any], target_host: str, namespace: str
) -> AsyncIterator[str]:
    """``python -m starter.http`` with ``values`` as its ``REGISTRATION_*`` variables; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REGISTRATION_")},
        **{env_variable(name): str(value).lower() if isinstance(value, bool) else str(value)
           for name, value in values.items()},
        "REGISTRATION_API_PORT": str(port),
        "REGISTRATION_API_RATE_LIMIT_PER_ADDRESS": "1000000/minute",
        "REGISTRATION_API_RATE_LIMIT_PER_EMAIL": "1000000/minute",
        "TEMPORAL_ADDRESS": target_host,
        "TEMPORAL_NAMESPACE": namespace,
    }  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter.http", cwd=REPO, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the API did not get ready in 30 s")
        yield url
    finally:
        process.terminate()
        await process.wait()


async def batch(start: Start, names: list[str], concurrency: int) -> tuple[list[float], float]:
    """Every start, at most ``concurrency`` at a time: each one's seconds, and the wall time."""
    took: list[float] = []
    pending = iter(names)

    async def lane() -> None:
        for name in pending:
            began = time.perf_counter()
            await start(name)
            took.append(time.perf_counter() - began)

    began = time.perf_counter()
    async with asyncio.TaskGroup() as lanes:
        for _ in range(min(concurrency, len(names))):
            lanes.create_task(lane())
    return took, time.perf_counter() - began


async def main_async(args: argparse.Namespace) -> str:
    keys = generated_keys()
    password = secrets.token_urlsafe(18)
    figures: dict[str, dict[str, list[float]]] = {
        way: {"walls": [], "latency": []} for way in ("client", "api")
    }
    with tempfile.TemporaryDirectory(prefix="registration-bench-api-") as temp:
        root = Path(temp)
        values = settings_values(root, "api", keys)
        settings = Settings(_env_file=None, **values)
        async with fresh_server(root / "server", data_converter(settings)) as (env, _):
            client = env.client
            config = WorkerConfig.beside(client, values, root / "markers", stub_argon2id=True)
            registrations = RegistrationClient(client, settings)
            limits = httpx.Limits(max_connections=args.concurrency * 2)
            async with (
                started(config),
                api_process(values, config.target_host, config.namespace) as url,
                httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http,
            ):

                async def by_client(name: str) -> None:
                    await registrations.register(
                        email=f"{name}@example.com", name="Bench Customer", password=password
                    )

                async def by_api(name: str) -> None:
                    body = {"email": f"{name}@example.com", "name": "Bench Customer",
                            "password": password}  # fmt: skip
                    answer = await http.post("/v1/registrations", json=body)
                    if answer.status_code != 202:
                        raise RuntimeError(f"the API answered {answer.status_code}")

                ways: dict[str, Start] = {"client": by_client, "api": by_api}
                for way, start in ways.items():  # warm-up: connections, imports
                    await batch(start, [f"w-{way}-{i}" for i in range(args.warmup)], 4)
                for round_ in range(args.rounds):
                    order = list(ways) if round_ % 2 == 0 else list(ways)[::-1]
                    for way in order:
                        progress(f"round {round_ + 1}: {way}")
                        names = [f"t-{way}-{round_}-{i}" for i in range(args.count)]
                        _, wall = await batch(ways[way], names, args.concurrency)
                        figures[way]["walls"].append(args.count / wall)
                        names = [f"l-{way}-{round_}-{i}" for i in range(args.latency_count)]
                        took, _ = await batch(ways[way], names, 1)
                        figures[way]["latency"] += took
    lines = ["way     starts/s (median of rounds)  p50 ms  p99 ms  (start call, 1 in flight)"]
    for way, label in (("client", "client"), ("api", "HTTP API")):
        rates = sorted(figures[way]["walls"])
        latency = figures[way]["latency"]
        lines.append(
            f"{label:<8}{rates[len(rates) // 2]:>29.0f}  {percentile_ms(latency, 50):>6.1f}"
            f"  {percentile_ms(latency, 99):>6.1f}"
        )
    lines.append(
        f"{args.rounds} rounds of {args.count} starts at {args.concurrency} in flight and"
        f" {args.latency_count} at 1 in flight per way; {len(os.sched_getaffinity(0))} cores"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.api",
        description="Starts through the HTTP API against the Python client; docs/benchmarks.md.",
    )
    add = parser.add_argument
    add("--count", type=at_least(1), default=300, help="starts per round and way at load (300)")
    add("--concurrency", type=at_least(1), default=20, help="starts in flight at load (20)")
    add("--latency-count", type=at_least(1), default=100, help="starts at 1 in flight (100)")
    add("--warmup", type=at_least(0), default=20, help="starts per way first, not counted (20)")
    add("--rounds", type=at_least(1), default=2, help="rounds, the order alternating (2)")
    print(asyncio.run(main_async(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
