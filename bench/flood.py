"""``python -m bench flood``: what floods of guesses cost at a server's limit of updates in flight.

For each limit (``--limits``; default Temporal's 10 and the embedded server's
``MAX_IN_FLIGHT_UPDATES``): a dev server of its own with that limit and a worker subprocess, as
``python -m bench`` sets them up (``bench/stack.py``, ``bench/worker_process.py``); ``--floods``
registrations, each sent ``--guesses`` wrong codes at once by a client without the per-email
limit (as from many processes), with a policy that never locks them. Printed per limit: the
answers, the wall time, server and worker CPU per guess, and the worker's forced cache evictions
(each one a replay of the run's whole history for its next task), read from its Prometheus
endpoint. See docs/client.md, "Floods".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import socket
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from temporalio.client import Client

from bench.load import RegistrationScenario
from bench.mailbox import read_code
from bench.stack import Cpu, at_least, fresh_server, generated_keys, machine_line, settings_values
from bench.worker_process import WorkerConfig, started
from common.converter import data_converter
from common.settings import Settings
from common.temporal import MAX_IN_FLIGHT_UPDATES
from starter.client import Busy, NotPending, RegistrationClient
from workflows.models import ActivationOutcome

EVICTIONS = re.compile(r"^temporal_sticky_cache_total_forced_eviction\S* (\S+)$", re.MULTILINE)


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


async def evictions(metrics_url: str) -> float:
    """The worker's forced cache evictions so far (every reason, every task queue)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(metrics_url)).text
    return sum(float(value) for value in EVICTIONS.findall(text))


def wrong(code: str, offset: int) -> str:
    """Another 6-digit code: not ``code``."""
    return f"{(int(code) + offset) % 1_000_000:06d}"


async def flood(
    registrations: RegistrationClient, email: str, code: str, guesses: int
) -> Counter[str]:
    """``guesses`` wrong codes for ``email`` at once; what each answered."""

    async def guess(offset: int) -> str:
        try:
            reply = await registrations.submit_code(email, wrong(code, offset))
        except (Busy, NotPending) as err:
            return type(err).__name__
        return reply.outcome.value

    return Counter(await asyncio.gather(*(guess(n) for n in range(1, guesses + 1))))


async def one_limit(limit: int, args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="registration-flood-") as temp:
        root = Path(temp)
        port = free_port()
        values = {
            **settings_values(root, "flood", generated_keys()),
            "metrics_bind_address": f"127.0.0.1:{port}",
            "max_attempts_per_code": args.guesses + 1,
            "max_attempts_total": args.guesses + 1,
        }
        settings = Settings(_env_file=None, **values)
        converter = data_converter(settings)
        async with fresh_server(root / "server", converter, limit) as (env, server):
            scenario = RegistrationScenario(env.client, settings, secrets.token_urlsafe(18))
            config = WorkerConfig.beside(env.client, values, root / "markers", stub_argon2id=True)
            # Its own connection, so that the SDK's retries of refusals are the attackers' own.
            attacker = await Client.connect(config.target_host, data_converter=converter)
            unlimited = RegistrationClient(attacker, settings, calls_per_email=None)
            async with started(config) as worker:
                metrics = f"http://127.0.0.1:{port}/metrics"
                names = [f"f{i}" for i in range(args.floods)]
                for name in names:
                    await scenario.start(name)
                emails = [scenario.email(name) for name in names]
                codes = [await read_code(settings.outbox_path, email) for email in emails]
                evicted = await evictions(metrics)
                before, began = Cpu.now(server, worker), time.perf_counter()
                answers: Counter[str] = Counter()
                for email, code in zip(emails, codes, strict=True):
                    answers += await flood(unlimited, email, code, args.guesses)
                wall, cpu = time.perf_counter() - began, Cpu.now(server, worker) - before
                evicted = await evictions(metrics) - evicted
    guesses = args.floods * args.guesses
    checked = answers[ActivationOutcome.INVALID_CODE.value]
    return (
        f"limit {limit:>5}: {wall:6.1f} s; per guess: server {cpu.server / guesses * 1000:5.1f} ms,"
        f" worker {cpu.worker / guesses * 1000:5.1f} ms CPU; {evicted:.0f} forced evictions;"
        f" {checked} of {guesses} checked; answers {dict(sorted(answers.items()))}"
    )


async def run(args: argparse.Namespace) -> list[str]:
    load_before = os.getloadavg()[0]
    lines = [await one_limit(limit, args) for limit in args.limits]
    return [
        *lines,
        "",
        f"--floods {args.floods} --guesses {args.guesses}, one flood at a time; Argon2id stubbed;"
        " payload encryption on",
        machine_line(load_before),
    ]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench flood",
        description="What floods of guesses cost at a server's limit of updates in flight.",
    )
    parser.add_argument("--floods", type=at_least(1), default=3, help="registrations flooded")
    parser.add_argument("--guesses", type=at_least(1), default=50, help="wrong codes at once")
    parser.add_argument(
        "--limits",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[10, MAX_IN_FLIGHT_UPDATES],
        help="server limits of updates in flight per workflow, comma-separated",
    )
    args = parser.parse_args(argv)
    print("\n".join(asyncio.run(run(args))))
