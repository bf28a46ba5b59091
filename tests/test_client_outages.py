"""A Temporal outage during a call: every method of the client raises its ``ServerUnreachable``
(a ``RegistrationError``) with the advice whether the call is safe to retry, never the SDK's raw
``RPCError``. Against a real dev server of the test's own, stopped after a registration."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from common import temporal
from common.converter import data_converter
from common.settings import Settings
from common.temporal import dev_server_path
from starter.client import RegistrationClient, RegistrationError, ServerUnreachable
from tests.helpers import PASSWORD
from workflows import visibility


async def unreachable(call: Awaitable[Any]) -> ServerUnreachable:
    with pytest.raises(RegistrationError) as raised:
        await call
    assert type(raised.value) is ServerUnreachable, repr(raised.value)
    return raised.value


async def test_every_call_during_an_outage_is_server_unreachable_with_retry_advice(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker is needed: the registration is started, then the server stops, and each call
    fails on its first RPC (after the SDK's own retries of UNAVAILABLE, up to 10 s; the calls run
    side by side)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=dev_server_path(),
        data_converter=data_converter(settings),
        search_attributes=visibility.ALL,
    )
    address = env.client.service_client.config.target_host
    registrations = RegistrationClient(env.client, settings)
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    await registrations.register(email=email, name="Kim", password=PASSWORD)
    await env.shutdown()

    calls = {
        "register": registrations.register(email=email, name="Kim", password=PASSWORD),
        "submit_code": registrations.submit_code(email, "123456", request_id="r-1"),
        "resend": registrations.resend(email, request_id="r-2"),
        "status": registrations.status(email),
        "approve": registrations.approve(email, "support:kim", "identity checked by phone"),
        "cancel": registrations.cancel(email),
    }
    errors = dict(zip(calls, await asyncio.gather(*map(unreachable, calls.values())), strict=True))
    for call, error in errors.items():
        assert isinstance(error, temporal.ServerUnreachable)  # what ``connect`` raised before
        assert isinstance(error, ConnectionError)
        assert error.address == address
        message = str(error)
        assert message.startswith(f"cannot reach the Temporal server at {address}"), message
        assert error.advice and message.endswith(error.advice)
        assert f"{call} is safe to retry" in error.advice or (
            call == "register" and "register is idempotent per email" in error.advice
        )
    assert "same request_id" in errors["submit_code"].advice
    assert "same request_id" in errors["resend"].advice

    # At connect, the same exception, also a RegistrationError now.
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)
    monkeypatch.delenv("TEMPORAL_PROFILE", raising=False)
    refused = await unreachable(RegistrationClient.connect(settings))
    assert refused.address == address
    assert str(refused).endswith("once it is back, connect again: nothing was sent")
