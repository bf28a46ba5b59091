"""Every terminal path of a registration, driven as a backend and support staff would drive it.

Used by the history recorder (``python -m tests.histories.record``) and by the tests that read
real histories. Each scenario returns the workflow ID whose latest run took that path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import NamedTuple

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.rendering import ACTIVATION, WELCOME
from activities.roles import NewCustomer
from starter.client import Receipt, RegistrationClient, UnknownRegistration
from tests.doubles import (
    GatedCustomers,
    HeldMail,
    HeldRejectingIdentity,
    RejectingIdentity,
    activation_held_at_gate,
)
from tests.helpers import (
    NAME,
    PASSWORD,
    categories,
    customers,
    identity,
    register,
    register_and_submit_code,
    result_of,
    wait_for_state,
    wrong_code,
)
from tests.outbox import latest_token, messages_to
from tests.stack import Remote, Stack, beside
from workflows import visibility
from workflows.models import (
    ActivationOutcome,
    ActivationReply,
    Approval,
    RegistrationState,
    ResendOutcome,
    ResendReply,
    ResendRequest,
)
from workflows.registration import RegistrationWorkflow
from workflows.sweep import SweepInput, SweepWorkflow

EMAIL = "Riley.Recorded@Example.com"
NAME_GIVEN = "Riley Recorded"
LINK_BASE = "https://shop.example/activate"


async def _pending(stack: Stack) -> str:
    receipt = await register(stack, EMAIL, NAME_GIVEN)
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


async def active_by_link(stack: Stack, env: WorkflowEnvironment) -> str:
    """Link mode (``REGISTRATION_ACTIVATION_LINK_BASE``): the mail carries a link token besides
    the code, and the token, submitted as the backend behind the link does, activates."""
    async for linked in beside(stack, "link", settings={"activation_link_base": LINK_BASE}):
        workflow_id = await _pending(linked)
        token = latest_token(linked.settings.outbox_path, EMAIL)
        reply = await linked.registrations.submit_code(EMAIL, token)
        assert reply.outcome is ActivationOutcome.ACTIVATED
        assert (await result_of(linked, workflow_id)).state is RegistrationState.ACTIVE
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


async def active_after_bare_resend_update(stack: Stack, env: WorkflowEnvironment) -> str:
    """The ``request_resend`` update as staff call it from the UI or CLI: with ``null``, then
    without an input (no ``ResendRequest``), then the new code."""
    workflow_id = await _pending(stack)
    handle = stack.client.get_workflow_handle(workflow_id)
    reply = await handle.execute_update("request_resend", args=[None], result_type=ResendReply)
    assert reply.outcome is ResendOutcome.THROTTLED
    await env.sleep(timedelta(seconds=61))
    reply = await handle.execute_update("request_resend", result_type=ResendReply)
    assert reply.outcome is ResendOutcome.SENT
    answer = await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
    assert answer.outcome is ActivationOutcome.ACTIVATED
    assert (await result_of(stack, workflow_id)).state is RegistrationState.ACTIVE
    return workflow_id


async def active_by_approval(stack: Stack, env: WorkflowEnvironment) -> str:
    workflow_id = await _pending(stack)
    await stack.registrations.approve(EMAIL, "support:kim", "identity checked by phone")
    assert (await result_of(stack, workflow_id)).state is RegistrationState.ACTIVE
    return workflow_id


async def active_linked(stack: Stack, env: WorkflowEnvironment) -> str:
    """An imported customer record is linked, not duplicated."""
    await customers(stack).create_customer(
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
    """The principal disappears while pending, so the activation fails. With in-process
    providers the customer and the activation are one transaction, which rolls the customer
    back; with remote ones (``failed_remote``) the customer was created by a step of its own,
    and the workflow's undo deletes it."""
    workflow_id = await _pending(stack)
    principal = await identity(stack).find_principal(EMAIL.lower())
    assert principal is not None
    await identity(stack).undo_principal(principal.id)
    reply = await stack.registrations.submit_code(EMAIL, stack.code_for(EMAIL))
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, workflow_id)
    assert await customers(stack).find_customer(EMAIL.lower()) is None
    status = await stack.registrations.status(EMAIL)  # names no customer: it was undone
    assert (status.customer_id, status.customer_number) == (None, None)
    described = await stack.client.get_workflow_handle(workflow_id).describe()
    assert described.typed_search_attributes.get(visibility.CUSTOMER_NUMBER) is None
    return workflow_id


async def expired(stack: Stack, env: WorkflowEnvironment) -> str:
    workflow_id = await _pending(stack)
    await env.sleep(timedelta(hours=24, minutes=1))
    assert (await result_of(stack, workflow_id)).state is RegistrationState.EXPIRED
    return workflow_id


async def locked(stack: Stack, env: WorkflowEnvironment) -> str:
    """Twenty wrong codes over four codes; the run then holds the email's failure window (24 h
    from the first wrong code) and ends with it."""
    workflow_id = await _pending(stack)
    for round_ in range(4):
        if round_:
            await env.sleep(timedelta(seconds=61))
            await stack.registrations.resend(EMAIL)
        wrong = await _wrong(stack)
        for _ in range(5):
            await stack.registrations.submit_code(EMAIL, wrong)
    await wait_for_state(stack, EMAIL, RegistrationState.LOCKED)
    await env.sleep(timedelta(hours=24))
    assert (await result_of(stack, workflow_id)).state is RegistrationState.LOCKED
    return workflow_id


LOCKOUT_POLICY = {"max_attempts_per_code": 2, "max_attempts_total": 2, "max_failures_per_window": 3}
"""Two wrong codes lock a registration; the email has three in its failure window."""


async def locked_then_registered_again(stack: Stack, env: WorkflowEnvironment) -> str:
    """Locked after two wrong codes, the registration holds the email's failure window; the
    customer registers again: it continues at once as the next registration, which may take
    only the one wrong code the window has left. The first run is recorded; staff then cancel
    the second."""
    async for strict in beside(stack, "lockout", settings=LOCKOUT_POLICY):
        receipt = await register(strict, EMAIL, NAME_GIVEN)
        await wait_for_state(strict, EMAIL, RegistrationState.PENDING)
        wrong = await _wrong(strict)
        for _ in range(2):
            await strict.registrations.submit_code(EMAIL, wrong)
        await wait_for_state(strict, EMAIL, RegistrationState.LOCKED)
        assert await register(strict, EMAIL, "Riley Again") == receipt
        await wait_for_state(strict, EMAIL, RegistrationState.PENDING)
        status = await strict.registrations.status(EMAIL)
        assert (status.attempts_left, status.code_attempts_left) == (1, 1)
        await cancel_the_next_run(strict, receipt)
    return receipt.registration_id


async def swept_after_a_terminate(stack: Stack, env: WorkflowEnvironment) -> str:
    """Staff terminate a pending registration (no compensation runs); the sweep then finds its
    inactive principal, asks Temporal, and undoes it. The sweep's run is recorded."""
    receipt = await register(stack, EMAIL, NAME_GIVEN)
    await wait_for_state(stack, EMAIL, RegistrationState.PENDING)
    await stack.client.get_workflow_handle(receipt.registration_id).terminate("staff")
    sweep_id = f"sweep-{receipt.registration_id}"
    report = await stack.client.execute_workflow(
        SweepWorkflow.run,
        SweepInput(grace=timedelta(0)),
        id=sweep_id,
        task_queue=stack.settings.task_queue,
    )
    assert (report.found, report.undone) == (1, 1)
    assert await identity(stack).find_principal(EMAIL.lower()) is None
    return sweep_id


async def cancelled_during_activation(stack: Stack, env: WorkflowEnvironment) -> str:
    """Staff cancel while the customer step runs (held at a gate): the step still finishes, then
    its customer and the principal are undone."""
    gate = GatedCustomers(customers(stack))
    async for gated in beside(stack, "gate", customers=gate):
        receipt, submit = await activation_held_at_gate(gate, gated, EMAIL, NAME_GIVEN)
        assert await customers(stack).find_customer(EMAIL.lower()) is not None
        await gated.registrations.cancel(EMAIL, "customer asked by phone")
        await asyncio.sleep(0.3)  # let the cancel reach the workflow while the step still runs
        gate.release.set()
        with pytest.raises(UnknownRegistration, match="no pending registration for"):
            await submit  # its run closed: told as for an email never registered
        with pytest.raises(WorkflowFailureError):
            await result_of(gated, receipt.registration_id)
    assert await customers(stack).find_customer(EMAIL.lower()) is None
    assert await identity(stack).find_principal(EMAIL.lower()) is None
    return receipt.registration_id


async def active_code_repeated(stack: Stack, env: WorkflowEnvironment) -> str:
    """The code comes again while the activation runs (a double click, a retry after a timeout):
    it is checked again without costing an attempt and answered like the first; a wrong code
    then is answered ``not_pending``. A remote customers provider holds the activation open at
    a gate (regular activities: the workflow takes calls meanwhile)."""
    gate = GatedCustomers(customers(stack))
    async for gated in beside(stack, "again", customers=Remote(gate)):
        receipt, first = await activation_held_at_gate(gate, gated, EMAIL, NAME_GIVEN)
        code = gated.code_for(EMAIL)
        again = asyncio.create_task(gated.registrations.submit_code(EMAIL, code))
        wrong = await gated.registrations.submit_code(EMAIL, wrong_code(code))
        assert wrong.outcome is ActivationOutcome.NOT_PENDING
        assert not again.done()  # it waits, as the first one does, for the activation to end
        gate.release.set()
        assert (await first).outcome is ActivationOutcome.ACTIVATED
        assert (await again).outcome is ActivationOutcome.ACTIVATED
        assert (await result_of(gated, receipt.registration_id)).state is RegistrationState.ACTIVE
    return receipt.registration_id


class EarlyAnswers(NamedTuple):
    workflow_id: str
    replies: tuple[ResendReply, ActivationReply]


async def answers_while_the_first_mail_is_out(
    stack: Stack, email: str, name: str = NAME
) -> EarlyAnswers:
    """A resend and a code from whoever registered ``email``, sent while its first mail (code or
    notice) is still being sent; then the registration is cancelled."""
    held = HeldMail(stack.providers.mail)
    async for running in beside(stack, email.partition("@")[0], mail=held):
        receipt = await register(running, email, name)
        await asyncio.wait_for(held.reached.wait(), 10)
        resend = await asyncio.wait_for(running.registrations.resend(email), 10)
        code = await asyncio.wait_for(running.registrations.submit_code(email, "123456"), 10)
        held.release.set()
        await running.registrations.cancel(email)
        with pytest.raises(WorkflowFailureError):
            await result_of(running, receipt.registration_id)
    return EarlyAnswers(receipt.registration_id, (resend, code))


async def already_registered_early_calls(stack: Stack, env: WorkflowEnvironment) -> str:
    """The email has an account; a resend and a code arrive while the notice is still being
    sent: both are answered ``not_pending``, as for a new email whose first mail is out."""
    await active_by_code(stack, env)
    early = await answers_while_the_first_mail_is_out(stack, EMAIL, NAME_GIVEN)
    resend, code = early.replies
    assert resend.outcome is ResendOutcome.NOT_PENDING
    assert code.outcome is ActivationOutcome.NOT_PENDING
    principal = await identity(stack).find_principal(EMAIL.lower())
    assert principal is not None and principal.active
    return early.workflow_id


async def failed_then_cancelled_while_undoing(stack: Stack, env: WorkflowEnvironment) -> str:
    """The activation fails for good; while the principal's undo is refused (for now), staff
    cancel: the compensation still runs to completion, and the outcome stays ``failed``."""
    held = HeldRejectingIdentity(identity(stack), rejections=2)
    async for gated in beside(stack, "undo", identity=held):
        receipt, outcome = await register_and_submit_code(gated, EMAIL, NAME_GIVEN)
        assert outcome is ActivationOutcome.FAILED
        await asyncio.wait_for(held.reached.wait(), 10)
        # From the Temporal UI: the client refuses to cancel a registration that has failed.
        await gated.client.get_workflow_handle(receipt.registration_id).cancel()
        await asyncio.sleep(0.5)  # the cancel reaches the workflow while the undo runs
        held.release.set()  # ... which is then refused
        await env.sleep(timedelta(minutes=4))  # retries after 1 and 2 minutes
        with pytest.raises(WorkflowFailureError):
            await result_of(gated, receipt.registration_id)
        assert held.deletes == 3
        status = await gated.registrations.status(EMAIL)
        assert status.state is RegistrationState.FAILED  # the outcome decided first
    assert await customers(stack).find_customer(EMAIL.lower()) is None
    assert await identity(stack).find_principal(EMAIL.lower()) is None
    return receipt.registration_id


async def registered_again_while_held(
    gated: Stack, receipt: Receipt, release: asyncio.Event, then: RegistrationState
) -> None:
    """A second ``register`` (another name) while the first run is held at ``release``: the same
    receipt; once released, the next run of the workflow ID reaches ``then``."""
    assert await register(gated, EMAIL, "Riley Again") == receipt
    await asyncio.sleep(0.3)  # the signal reaches the run while it is held
    assert (await gated.registrations.status(EMAIL)).registered_again  # staff can see it
    release.set()
    await wait_for_state(gated, EMAIL, then)
    assert not (await gated.registrations.status(EMAIL)).registered_again  # the new run's


async def cancel_the_next_run(gated: Stack, receipt: Receipt) -> None:
    """Staff cancel the run a scenario continued into (the recorded one is the first)."""
    await gated.registrations.cancel(EMAIL, "support: test over")
    with pytest.raises(WorkflowFailureError):
        await result_of(gated, receipt.registration_id)


async def failed_then_registered_again(stack: Stack, env: WorkflowEnvironment) -> str:
    """The activation fails for good and the principal's undo is held up at the provider; the
    customer registers again meanwhile. Same receipt; that registration starts, with its own
    data, once the undo is done, as the next run of the workflow (continue-as-new). The first run
    is recorded; staff then cancel the second."""
    held = HeldRejectingIdentity(identity(stack), rejections=0)
    async for gated in beside(stack, "again", identity=held):
        receipt, outcome = await register_and_submit_code(gated, EMAIL, NAME_GIVEN)
        assert outcome is ActivationOutcome.FAILED
        await asyncio.wait_for(held.reached.wait(), 10)
        await registered_again_while_held(gated, receipt, held.release, RegistrationState.PENDING)
        assert held.deletes == 1
        mails = messages_to(gated.settings.outbox_path, EMAIL)
        assert [m["Subject"] == mails[0]["Subject"] for m in mails] == [True, True]
        assert "Riley Again" in mails[-1].get_body(("plain",)).get_content()  # type: ignore[union-attr]
        principal = await identity(stack).find_principal(EMAIL.lower())
        assert principal is not None and not principal.active  # the new registration's
        await cancel_the_next_run(gated, receipt)
    assert await identity(stack).find_principal(EMAIL.lower()) is None
    return receipt.registration_id


async def cancelled_then_registered_again(stack: Stack, env: WorkflowEnvironment) -> str:
    """Staff cancel a pending registration; while its principal's undo is held up at the
    provider, the customer registers again. That came after the cancel, so it is kept: it
    starts once the undo is done, as the next run (continue-as-new). The first run is recorded;
    staff then cancel the second."""
    held = HeldRejectingIdentity(identity(stack), rejections=0)
    async for gated in beside(stack, "recancel", identity=held):
        receipt = await register(gated, EMAIL, NAME_GIVEN)
        await wait_for_state(gated, EMAIL, RegistrationState.PENDING)
        await gated.registrations.cancel(EMAIL, "customer asked by phone")
        await asyncio.wait_for(held.reached.wait(), 10)
        await registered_again_while_held(gated, receipt, held.release, RegistrationState.PENDING)
        assert categories(gated, EMAIL) == [ACTIVATION, ACTIVATION]
        await cancel_the_next_run(gated, receipt)
    assert await identity(stack).find_principal(EMAIL.lower()) is None
    return receipt.registration_id


async def active_then_registered_again(stack: Stack, env: WorkflowEnvironment) -> str:
    """The email is registered again while its new account's welcome mail is still out: same
    receipt, and once the welcome mail is sent the run continues as new into that registration,
    which finds the account and tells its owner (as a ``register`` a moment later would). The
    first run is recorded; staff then cancel the second."""
    held = HeldMail(stack.providers.mail, let_through=1)  # the code goes out, the welcome waits
    async for gated in beside(stack, "welcome", mail=held):
        receipt, outcome = await register_and_submit_code(gated, EMAIL, NAME_GIVEN)
        assert outcome is ActivationOutcome.ACTIVATED
        await asyncio.wait_for(held.reached.wait(), 10)
        await registered_again_while_held(
            gated, receipt, held.release, RegistrationState.ALREADY_REGISTERED
        )
        assert categories(gated, EMAIL) == [ACTIVATION, WELCOME, "customer_already_registered"]
        await cancel_the_next_run(gated, receipt)
    principal = await identity(stack).find_principal(EMAIL.lower())
    assert principal is not None and principal.active
    return receipt.registration_id


async def cancelled_before_the_start(stack: Stack, env: WorkflowEnvironment) -> str:
    """Staff cancel a registration that no worker has picked up yet (workers down or behind):
    it still ends ``cancelled``, in the status and the search attribute alike."""
    queued = stack.settings.model_copy(update={"task_queue": f"{stack.settings.task_queue}-q"})
    client = RegistrationClient(stack.client, queued)
    receipt = await client.register(email=EMAIL, name=NAME_GIVEN, password=PASSWORD)
    await client.cancel(EMAIL, "support: duplicate sign-up")
    async for worker in beside(stack, "q"):
        with pytest.raises(WorkflowFailureError):
            await result_of(worker, receipt.registration_id)
        status = await worker.registrations.status(EMAIL)
        assert status.state is RegistrationState.CANCELLED
    described = await stack.client.get_workflow_handle(receipt.registration_id).describe()
    assert described.typed_search_attributes.get(visibility.STATUS) == "cancelled"
    return receipt.registration_id


async def failed_then_cancelled_while_answering(stack: Stack, env: WorkflowEnvironment) -> str:
    """The activation fails for good while a resend's mail is still out; a cancel that comes
    while the run waits for that resend to finish changes nothing: the run ends failed."""
    held = HeldMail(stack.providers.mail, let_through=1)  # the first code goes out
    failing = RejectingIdentity(identity(stack), rejections=0)
    no_throttle = {"resend_interval": timedelta(0)}
    async for gated in beside(stack, "f", settings=no_throttle, identity=failing, mail=held):
        receipt = await register(gated, EMAIL, NAME_GIVEN)
        await wait_for_state(gated, EMAIL, RegistrationState.PENDING)
        resend = asyncio.create_task(gated.registrations.resend(EMAIL))
        await asyncio.wait_for(held.reached.wait(), 10)
        await gated.registrations.approve(EMAIL, "support:kim", "identity checked by phone")
        await wait_for_state(gated, EMAIL, RegistrationState.FAILED)
        # From the Temporal UI: the client refuses to cancel a registration that has failed.
        await gated.client.get_workflow_handle(receipt.registration_id).cancel()
        await asyncio.sleep(0.5)  # the cancel reaches the workflow while the resend runs
        held.release.set()
        assert (await resend).outcome is ResendOutcome.SENT
        with pytest.raises(WorkflowFailureError) as failure:
            await result_of(gated, receipt.registration_id)
        assert isinstance(failure.value.cause, ApplicationError)
        assert failure.value.cause.type == "RegistrationFailed"
        status = await gated.registrations.status(EMAIL)
        assert status.state is RegistrationState.FAILED
    assert await identity(stack).find_principal(EMAIL.lower()) is None
    return receipt.registration_id


async def active_by_approval_with_resend(stack: Stack, env: WorkflowEnvironment) -> str:
    """Staff approve while a resend is asked for, and the worker sees both in one workflow task
    (it was down): the account goes active and no new code is mailed for it."""
    no_throttle = {"resend_interval": timedelta(0)}
    async for worker in beside(stack, "a", settings=no_throttle):
        receipt = await register(worker, EMAIL, NAME_GIVEN)
        await wait_for_state(worker, EMAIL, RegistrationState.PENDING)
    handle = stack.client.get_workflow_handle(receipt.registration_id)  # no worker: both queue
    await handle.signal(RegistrationWorkflow.approve, Approval(operator="support:kim", reason="ok"))
    await handle.signal(RegistrationWorkflow.resend, ResendRequest(requested_by="customer"))
    async for worker in beside(stack, "a", settings=no_throttle):
        assert (await result_of(worker, receipt.registration_id)).state is RegistrationState.ACTIVE
    assert categories(stack, EMAIL) == [ACTIVATION, WELCOME]
    return receipt.registration_id


class Scenario(NamedTuple):
    run: Callable[[Stack, WorkflowEnvironment], Awaitable[str]]
    time_skipping: bool
    """Needs the time-skipping server (timers of a minute or a day)."""
    remote: bool = False
    """Runs every provider role as a remote one (``running_stack(remote=True)``)."""
    mails_code: bool = True
    """Mails at least one activation code (all but a registration cancelled before its start)."""
    first_run: bool = False
    """The path is the first run of the workflow ID's latest chain, which continued as new."""
    sweep: bool = False
    """The recorded run is the sweep's (``SweepWorkflow``), not a registration's."""

    async def history(self, client: Client, workflow_id: str) -> WorkflowHistory:
        """The history of the run that took the path (``run`` returned ``workflow_id``)."""
        handle = client.get_workflow_handle(workflow_id)
        if self.first_run:
            info = (await handle.describe()).raw_description.workflow_execution_info
            handle = client.get_workflow_handle(workflow_id, run_id=info.first_run_id)
        return await handle.fetch_history()


SCENARIOS = {
    "active_by_code": Scenario(active_by_code, False),
    "active_after_resend": Scenario(active_after_resend, True),
    "active_after_bare_resend_update": Scenario(active_after_bare_resend_update, True),
    "active_by_link": Scenario(active_by_link, False),
    "active_by_approval": Scenario(active_by_approval, False),
    "active_by_approval_with_resend": Scenario(active_by_approval_with_resend, False),
    "active_linked": Scenario(active_linked, False),
    "active_then_registered_again": Scenario(active_then_registered_again, False, first_run=True),
    "active_remote": Scenario(active_by_code, False, remote=True),
    "already_registered": Scenario(already_registered, True),
    "already_registered_cancelled": Scenario(already_registered_cancelled, False),
    "already_registered_early_calls": Scenario(already_registered_early_calls, False),
    "active_code_repeated": Scenario(active_code_repeated, False),
    "cancelled": Scenario(cancelled, False),
    "cancelled_remote": Scenario(cancelled, False, remote=True),
    "cancelled_before_the_start": Scenario(cancelled_before_the_start, False, mails_code=False),
    "cancelled_during_activation": Scenario(cancelled_during_activation, False),
    "cancelled_then_registered_again": Scenario(
        cancelled_then_registered_again, False, first_run=True
    ),
    "failed": Scenario(failed, False),
    "failed_remote": Scenario(failed, False, remote=True),
    "failed_then_cancelled_while_answering": Scenario(failed_then_cancelled_while_answering, False),
    "failed_then_cancelled_while_undoing": Scenario(failed_then_cancelled_while_undoing, True),
    "failed_then_registered_again": Scenario(failed_then_registered_again, False, first_run=True),
    "expired": Scenario(expired, True),
    "expired_remote": Scenario(expired, True, remote=True),
    "locked": Scenario(locked, True),
    "swept_after_a_terminate": Scenario(swept_after_a_terminate, False, sweep=True),
    "locked_then_registered_again": Scenario(locked_then_registered_again, False, first_run=True),
}
