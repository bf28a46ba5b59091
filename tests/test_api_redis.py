"""The rate limits shared through a real Redis server (``redis-server`` from Debian, installed
by .ci/run), started here on a free loopback port: two API processes count one client's requests
together, and ``/readyz`` checks Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.api_stack import running_api
from tests.ports import free_port
from tests.stack import Stack


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    executable = shutil.which("redis-server")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail(
                "redis-server is missing: .ci/run installs it (apt-get install redis-server)"
            )
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        await process.wait()


async def test_two_api_processes_share_the_counts_in_redis(stack: Stack, redis_url: str) -> None:
    shared = {"api_rate_limit_per_address": "3/minute", "api_rate_limit_storage": redis_url}
    async with running_api(stack, **shared) as first, running_api(stack, **shared) as second:
        async with first.client() as one, second.client() as other:
            answers = [
                await http.post("/v1/resends", json={"email": f"r-{uuid.uuid4().hex}@example.com"})
                for http in (one, other, one, other)
            ]
            ready = await other.get("/readyz")
    assert [answer.status_code for answer in answers] == [409, 409, 409, 429]
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert ready.status_code == 200, ready.text


async def test_readiness_fails_without_redis(stack: Stack) -> None:
    port = free_port()  # nothing listens there
    async with running_api(stack, api_rate_limit_storage=f"redis://127.0.0.1:{port}/0") as api:
        async with api.client() as http:
            ready = await http.get("/readyz")
            start = await http.post("/v1/resends", json={"email": "x@example.com"})
    assert start.status_code == 503 and start.headers["Retry-After"] == "5"
    assert ready.status_code == 503
    assert "rate limits" in ready.json()["detail"]
