"""Every terminal path of a registration, driven as a backend and support staff would drive it.

Used by the history recorder (``python -m tests.histories.record``) and by the tests that read
real histories. Each scenario returns the workflow ID whose latest run took that path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import NamedTuple

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.roles import NewCustomer
from tests.helpers import identity, register, result_of, wait_for_state, wrong_code
from tests.stack import Stack
from workflows.models import ActivationOutcome, RegistrationState, ResendOutcome

EMAIL = "Riley.Recorded@Example.com"


async def _pending(stack: Stack) -> str:
    receipt = await register(stack, EMAIL, "Riley Recorded")
    await wait_for_state(stack, EMAIL, RegistrationState.PENDING)
    return receipt.registration_id


async def _wrong(stack: Stack) -> str:
    return wrong_code(stack.code_for(EMAIL))


async def active_by_code(stack: Stack, env: WorkflowEnvironment) -> str:
    """A wrong code first, then the right one."""
    workflow_id = await _pending(stack)
    reply = await stack.registrations.submit_code(EMAIL, await _wrong(stack))
    assert reply.outcome is ActivationOutcome.INVALID_CODE
    reply = await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
    assert reply.outcome is ActivationOutcome.ACTIVATED
    assert (await result_of(stack, workflow_id)).state is RegistrationState.ACTIVE
    return workflow_id


async def active_after_resend(stack: Stack, env: WorkflowEnvironment) -> str:
    """A throttled resend, a resend a minute later, then the new code."""
    workflow_id = await _pending(stack)
    assert (await stack.registrations.resend(EMAIL)).outcome is ResendOutcome.THROTTLED
    await env.sleep(timedelta(seconds=61))
    assert (await stack.registrations.resend(EMAIL)).outcome is ResendOutcome.SENT
    reply = await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
    assert reply.outcome is ActivationOutcome.ACTIVATED
    assert (await result_of(stack, workflow_id)).state is RegistrationState.ACTIVE
    return workflow_id


async def active_by_approval(stack: Stack, env: WorkflowEnvironment) -> str:
    workflow_id = await _pending(stack)
    await stack.registrations.approve(EMAIL, "support:kim", "identity checked by phone")
    assert (await result_of(stack, workflow_id)).state is RegistrationState.ACTIVE
    return workflow_id


async def active_linked(stack: Stack, env: WorkflowEnvironment) -> str:
    """An imported customer record is linked, not duplicated."""
    await stack.providers.customers.create_customer(
        NewCustomer(
            id="imported-1",
            email=EMAIL,
            email_canonical=EMAIL.lower(),
            name="Riley (imported)",
        )
    )
    workflow_id = await _pending(stack)
    await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
    result = await result_of(stack, workflow_id)
    assert result.state is RegistrationState.ACTIVE and result.linked_existing_customer
    return workflow_id


async def already_registered(stack: Stack, env: WorkflowEnvironment) -> str:
    """The email has an account: its owner is told, and the caller gets a pending registration's
    answers (here: a wrong code) until the activation window ends."""
    workflow_id = await active_by_code(stack, env)
    await register(stack, EMAIL, "Riley Again")
    reply = await stack.registrations.submit_code(EMAIL, "000000")
    assert reply.outcome is ActivationOutcome.INVALID_CODE
    await env.sleep(timedelta(hours=24, minutes=1))
    assert (await result_of(stack, workflow_id)).state is RegistrationState.ALREADY_REGISTERED
    return workflow_id


async def already_registered_cancelled(stack: Stack, env: WorkflowEnvironment) -> str:
    """Staff cancel the registration of an email that has an account: it ends cancelled in
    Temporal, its outcome stays ``already_registered``, and the account is untouched."""
    workflow_id = await active_by_code(stack, env)
    await register(stack, EMAIL, "Riley Again")
    await wait_for_state(stack, EMAIL, RegistrationState.ALREADY_REGISTERED)
    await stack.registrations.cancel(EMAIL, "support: duplicate sign-up")
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, workflow_id)
    status = await stack.registrations.status(EMAIL)
    assert status.state is RegistrationState.ALREADY_REGISTERED
    principal = await identity(stack).find_principal(EMAIL.lower())
    assert principal is not None and principal.active
    return workflow_id


async def cancelled(stack: Stack, env: WorkflowEnvironment) -> str:
    workflow_id = await _pending(stack)
    await stack.registrations.cancel(EMAIL, "customer asked by phone")
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, workflow_id)
    assert await identity(stack).find_principal(EMAIL.lower()) is None
    return workflow_id


async def failed(stack: Stack, env: WorkflowEnvironment) -> str:
    """The principal disappears while pending: activation fails after the customer was created,
    and that customer is deleted again."""
    workflow_id = await _pending(stack)
    principal = await identity(stack).find_principal(EMAIL.lower())
    assert principal is not None
    await identity(stack).delete_principal(principal.id)
    reply = await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, workflow_id)
    assert await stack.providers.customers.find_customer(EMAIL.lower()) is None
    return workflow_id


async def expired(stack: Stack, env: WorkflowEnvironment) -> str:
    workflow_id = await _pending(stack)
    await env.sleep(timedelta(hours=24, minutes=1))
    assert (await result_of(stack, workflow_id)).state is RegistrationState.EXPIRED
    return workflow_id


async def locked(stack: Stack, env: WorkflowEnvironment) -> str:
    """Twenty wrong codes over four codes."""
    workflow_id = await _pending(stack)
    for round_ in range(4):
        if round_:
            await env.sleep(timedelta(seconds=61))
            await stack.registrations.resend(EMAIL)
        wrong = await _wrong(stack)
        for _ in range(5):
            await stack.registrations.submit_code(EMAIL, wrong)
    assert (await result_of(stack, workflow_id)).state is RegistrationState.LOCKED
    return workflow_id


class Scenario(NamedTuple):
    run: Callable[[Stack, WorkflowEnvironment], Awaitable[str]]
    time_skipping: bool
    """Needs the time-skipping server (timers of a minute or a day)."""
    remote: bool = False
    """Runs every provider role as a remote one (``running_stack(remote=True)``)."""


SCENARIOS = {
    "active_by_code": Scenario(active_by_code, False),
    "active_after_resend": Scenario(active_after_resend, True),
    "active_by_approval": Scenario(active_by_approval, False),
    "active_linked": Scenario(active_linked, False),
    "active_remote": Scenario(active_by_code, False, remote=True),
    "already_registered": Scenario(already_registered, True),
    "already_registered_cancelled": Scenario(already_registered_cancelled, False),
    "cancelled": Scenario(cancelled, False),
    "failed": Scenario(failed, False),
    "expired": Scenario(expired, True),
    "locked": Scenario(locked, True),
}
