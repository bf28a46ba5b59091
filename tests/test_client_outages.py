"""A Temporal outage during a call: every method of the client raises its ``ServerUnreachable``
(a ``RegistrationError``) with the advice whether the call is safe to retry, never the SDK's raw
``RPCError``. Against a real dev server of the test's own, stopped after a registration."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from typing import Any

import pytest
from temporalio.client import WorkflowUpdateHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.testing import WorkflowEnvironment

from common import temporal
from common.converter import data_converter
from common.settings import Settings
from common.temporal import dev_server_path
from starter.client import RegistrationClient, RegistrationError, ServerUnreachable
from tests.helpers import PASSWORD, register, wait_for_state
from tests.stack import Stack
from workflows import visibility
from workflows.models import ActivationOutcome, RegistrationState


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


def cancelled_under_the_client(monkeypatch: pytest.MonkeyPatch, *, hold: float = 0.0) -> list[str]:
    """``WorkflowUpdateHandle.result`` fails its first call as the SDK does when the future of
    its RPC is cancelled (after ``hold`` seconds, or at once):
    ``WorkflowUpdateRPCTimeoutOrCancelledError`` from a ``CancelledError``. Seen in server
    outages (the reliability suite); it cannot be provoked on purpose. The list records the
    update ids of the calls that failed."""
    real = WorkflowUpdateHandle.result
    failed: list[str] = []

    async def result(self: WorkflowUpdateHandle[Any], **kwargs: Any) -> Any:
        if failed:
            return await real(self, **kwargs)
        failed.append(self.id)
        try:
            await asyncio.sleep(hold)
            raise asyncio.CancelledError()
        except asyncio.CancelledError as err:
            raise WorkflowUpdateRPCTimeoutOrCancelledError() from err

    monkeypatch.setattr(WorkflowUpdateHandle, "result", result)
    return failed


async def test_an_update_cancelled_under_the_client_is_server_unreachable(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the SDK's raw error: ``ServerUnreachable`` with the call's retry advice, and the retry
    with the same ``request_id`` gets the first call's outcome."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    code = stack.code_for(email)
    failed = cancelled_under_the_client(monkeypatch)

    error = await unreachable(stack.registrations.submit_code(email, code, request_id="r-1"))
    assert "cancelled under the client" in str(error)
    assert "with the same request_id" in str(error), str(error)
    reply = await stack.registrations.submit_code(email, code, request_id="r-1")
    assert reply.outcome is ActivationOutcome.ACTIVATED
    assert len(failed) == 1


async def test_a_caller_cancelling_an_update_gets_a_cancellation(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK reports a caller's cancellation as its ``WorkflowUpdateRPCTimeoutOrCancelledError``
    too; the client gives it back as the cancellation it was, so the caller's own
    ``asyncio.timeout`` raises its ``TimeoutError``, and it is not taken for an outage."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    cancelled_under_the_client(monkeypatch, hold=60)

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2):
            await stack.registrations.submit_code(email, stack.code_for(email), request_id="r-1")
