"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from temporalio.service import RPCError, RPCStatusCode

from activities.providers.local import LocalCustomers, LocalIdentity
from starter.client import Receipt
from tests.outbox import messages_to
from tests.stack import Remote, Stack
from workflows.models import ActivationOutcome, RegistrationResult, RegistrationState

PASSWORD = "correct horse battery staple"


NAME = "Alice Andersson"


async def register(stack: Stack, email: str, name: str = NAME) -> Receipt:
    return await stack.registrations.register(email=email, name=name, password=PASSWORD)


async def register_and_submit_code(
    stack: Stack, email: str, name: str = NAME
) -> tuple[Receipt, ActivationOutcome]:
    """Register, wait for the code, submit it: the outcome says how the activation went."""
    receipt = await register(stack, email, name)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    reply = await stack.registrations.submit_code(email, stack.code_for(email))
    return receipt, reply.outcome


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll for about 10 s until ``check`` holds (signals and mails arrive on their own time)."""
    for _ in range(200):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def wait_for_state(stack: Stack, email: str, state: RegistrationState) -> None:
    async def reached() -> bool:
        return (await stack.registrations.status(email)).state is state

    await eventually(reached, f"{email} reaching {state}")


async def result_of(stack: Stack, registration_id: str) -> RegistrationResult:
    handle = stack.client.get_workflow_handle(registration_id, result_type=RegistrationResult)
    result: RegistrationResult = await handle.result()
    return result


async def nothing_started(stack: Stack, email: str) -> bool:
    """Whether no registration of ``email`` exists, asked of Temporal itself (not through the
    client, which refuses an invalid email before it asks)."""
    workflow_id = stack.registrations.registration_id(email)
    try:
        await stack.client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return True
        raise
    return False


def categories(stack: Stack, email: str) -> list[str]:
    """The ``X-Category`` of every mail to ``email`` in the outbox, oldest first."""
    return [str(m["X-Category"]) for m in messages_to(stack.settings.outbox_path, email)]


async def local_activities(stack: Stack, registration_id: str) -> list[str]:
    """The types of the local activities a registration ran, in order, from its history's markers
    (their data is the SDK's own JSON, not a payload of the data converter)."""
    history = await stack.client.get_workflow_handle(registration_id).fetch_history()
    return [
        json.loads(marker.details["data"].payloads[0].data)["activity_type"]
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
        for marker in [event.marker_recorded_event_attributes]
    ]


def wrong_code(code: str, offset: int = 1) -> str:
    """Another 6-digit code: certainly not ``code``."""
    return f"{(int(code) + offset) % 1_000_000:06d}"


def _local(provider: object) -> object:
    """The provider inside ``Remote`` wrappers (a remote stack's records are still local)."""
    while isinstance(provider, Remote):
        provider = provider.inner
    return provider


def identity(stack: Stack) -> LocalIdentity:
    provider = _local(stack.providers.identity)
    assert isinstance(provider, LocalIdentity)
    return provider


def customers(stack: Stack) -> LocalCustomers:
    provider = _local(stack.providers.customers)
    assert isinstance(provider, LocalCustomers)
    return provider
