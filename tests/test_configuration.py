"""Misconfiguration stops the worker at start-up with a message naming the setting."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from activities.errors import ConfigurationError
from activities.providers import open_providers
from activities.providers.hantera import HanteraCustomers
from activities.providers.local import LocalIdentity
from activities.providers.outbox import OutboxMail
from tests.stack import make_settings

REPO = Path(__file__).resolve().parent.parent


async def test_unknown_provider_names_the_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, customers_provider="shopify")
    with pytest.raises(ConfigurationError, match="REGISTRATION_CUSTOMERS_PROVIDER='shopify'"):
        async with open_providers(settings):
            pass


async def test_missing_hantera_credentials_name_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BASE_URL", "CLIENT_ID", "CLIENT_SECRET"):
        monkeypatch.delenv(f"REGISTRATION_HANTERA_{name}", raising=False)
    settings = make_settings(tmp_path, identity_provider="hantera")
    with pytest.raises(ConfigurationError, match="REGISTRATION_HANTERA_BASE_URL"):
        async with open_providers(settings):
            pass


async def test_roles_compose_independently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRATION_HANTERA_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("REGISTRATION_HANTERA_CLIENT_ID", "id")
    monkeypatch.setenv("REGISTRATION_HANTERA_CLIENT_SECRET", "secret")
    settings = make_settings(tmp_path, customers_provider="hantera")
    async with open_providers(settings) as providers:
        assert isinstance(providers.identity, LocalIdentity)
        assert isinstance(providers.customers, HanteraCustomers)
        assert isinstance(providers.mail, OutboxMail)


async def test_worker_exits_with_the_setting_named(tmp_path: Path) -> None:
    environment = {
        **os.environ,
        "REGISTRATION_DATA_DIR": str(tmp_path),
        "REGISTRATION_MAIL_PROVIDER": "pigeon",
        "TEMPORAL_ADDRESS": "127.0.0.1:9",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "worker.py", cwd=REPO, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "REGISTRATION_MAIL_PROVIDER='pigeon'" in stderr.decode()
    assert "Traceback" not in stderr.decode()
