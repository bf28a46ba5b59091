"""A connection that breaks under a call (found by the reliability suite): when the server goes
away while a request is being written, e.g. one the SDK is retrying after the server's "limit on
number of concurrent in-flight updates" during a flood of guesses, the SDK reports status UNKNOWN
"transport error" (a broken pipe), not UNAVAILABLE, and does not retry it. Like any outage it must
reach the caller as ``ServerUnreachable`` with the call's retry advice, not as the raw
``RPCError``: a backend retries the one and gives up on the other (the suite's brute force of a
registration meant to lock gave up, and the registration stayed pending).

The break itself is a race of the server's shutdown, so the RPC is made to fail as it did there."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from common.converter import data_converter
from common.settings import Settings
from starter.client import RegistrationClient, RegistrationError, ServerUnreachable
from tests.helpers import PASSWORD

BROKEN = RPCError("transport error", RPCStatusCode.UNKNOWN, b"")
"""What the SDK raised in the suite: ``Status { code: Unknown, message: "transport error", source:
hyper::Error(Io, BrokenPipe "stream closed because of a broken pipe") }``."""


def calls(
    registrations: RegistrationClient, email: str
) -> dict[str, tuple[str, Callable[[], Awaitable[Any]]]]:
    """Each call, the RPC it breaks in, and the call."""
    return {
        "register": (
            "start_workflow_execution",
            lambda: registrations.register(email=email, name="Kim", password=PASSWORD),
        ),
        "submit_code": (
            "update_workflow_execution",
            lambda: registrations.submit_code(email, "123456", request_id="r-1"),
        ),
        "status": ("query_workflow", lambda: registrations.status(email)),
    }


@pytest.mark.parametrize("call", ["register", "submit_code", "status"])
async def test_a_connection_broken_under_a_call_is_server_unreachable(
    dev_env: WorkflowEnvironment,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    call: str,
) -> None:
    client = await Client.connect(
        dev_env.client.service_client.config.target_host, data_converter=data_converter(settings)
    )
    registrations = RegistrationClient(client, settings)
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    if call != "register":
        await registrations.register(email=email, name="Kim", password=PASSWORD)
    rpc, make_call = calls(registrations, email)[call]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise BROKEN

    monkeypatch.setattr(client.workflow_service, rpc, broken)
    with pytest.raises(RegistrationError) as raised:
        await make_call()
    assert type(raised.value) is ServerUnreachable, repr(raised.value)
    assert "transport error" in str(raised.value)
    advice = "register is idempotent" if call == "register" else f"{call} is safe to retry"
    assert advice in str(raised.value)
