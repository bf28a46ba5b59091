"""A second ``register`` for an email whose registration is still running (signal
``register_again``): answered by a code of that run when one is still to come, else started
when the run ends; dropped by a cancel that follows it; never for another email. The paths
that continue as new are recorded scenarios (``failed_then_registered_again``,
``active_then_registered_again``); these are the ones that must not (dev server)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from common.keys import fernet_keys
from common.sealing import Sealer
from starter.client import Receipt
from tests.doubles import HeldMail, HeldRejectingIdentity
from tests.helpers import (
    PASSWORD,
    categories,
    identity,
    register,
    register_and_submit_code,
    result_of,
    wait_for_state,
    wrong_code,
)
from tests.stack import Stack, beside
from workflows.models import (
    ActivationOutcome,
    RegistrationInput,
    RegistrationState,
    ResendOutcome,
    ResendRequest,
)
from workflows.registration import RegistrationWorkflow


async def register_again_then_cancel(
    stack: Stack, receipt: Receipt, email: str, release: asyncio.Event
) -> None:
    """While the run is held at ``release``: a second ``register`` (same receipt), then a cancel
    from the Temporal UI; then the run goes on."""
    assert await register(stack, email, "Again") == receipt
    await stack.client.get_workflow_handle(receipt.registration_id).cancel()
    await asyncio.sleep(0.3)  # both reach the run while it is held
    release.set()


async def runs_of(stack: Stack, registration_id: str) -> list[WorkflowExecutionStatus | None]:
    """The status of every run of ``registration_id``, oldest first."""
    listed = stack.client.list_workflows(f"WorkflowId = '{registration_id}'")
    return [run.status async for run in listed][::-1]


async def test_a_register_before_the_first_mail_is_answered_by_that_mail(stack: Stack) -> None:
    email = "rae@example.com"
    held = HeldMail(stack.providers.mail)
    async for running in beside(stack, "first", mail=held):
        receipt = await register(running, email)
        await asyncio.wait_for(held.reached.wait(), 10)
        assert await register(running, email, "Rae Again") == receipt
        await asyncio.sleep(0.3)  # the signal reaches the run while its first mail is out
        assert (await running.registrations.status(email)).registered_again
        held.release.set()
        await wait_for_state(running, email, RegistrationState.PENDING)
        assert not (await running.registrations.status(email)).registered_again  # answered
        reply = await running.registrations.submit_code(email, running.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED
        held.release.set()  # the welcome mail
        async with asyncio.timeout(30):  # a second run would keep the result waiting
            result = await result_of(running, receipt.registration_id)
        assert result.state is RegistrationState.ACTIVE
    # One code, and no second run (which would tell the new account's owner it exists).
    assert categories(stack, email) == ["customer_activation", "customer_welcome"]
    assert await runs_of(stack, receipt.registration_id) == [WorkflowExecutionStatus.COMPLETED]


async def test_a_cancel_drops_a_register_that_came_before_it(stack: Stack) -> None:
    """Staff cancel (from the Temporal UI) a failed registration that waits for its undo, after
    the customer registered again: the undo still runs, and no new registration starts."""
    email = "ros@example.com"
    held = HeldRejectingIdentity(identity(stack), rejections=0)
    async for gated in beside(stack, "dropped", identity=held):
        receipt, outcome = await register_and_submit_code(gated, email)
        assert outcome is ActivationOutcome.FAILED
        await asyncio.wait_for(held.reached.wait(), 10)
        await register_again_then_cancel(gated, receipt, email, held.release)
        with pytest.raises(WorkflowFailureError):
            async with asyncio.timeout(30):  # a second run would keep the result waiting
                await result_of(gated, receipt.registration_id)
    assert await runs_of(stack, receipt.registration_id) == [WorkflowExecutionStatus.FAILED]
    assert categories(stack, email) == ["customer_activation"]
    assert await identity(stack).find_principal(email) is None  # undone all the same


async def test_a_register_for_another_email_is_ignored(stack: Stack) -> None:
    """``register_again`` sent by hand (the UI's signal form) with another email's input: that
    email's registration belongs to its own workflow ID, so this run takes nothing from it."""
    email, other = "rory@example.com", "other-rory@example.com"
    sealer = Sealer(fernet_keys(stack.settings.seal_key, stack.settings.data_dir))
    foreign = RegistrationInput(email=other, name="Other", sealed_password=sealer.seal(PASSWORD))
    held = HeldMail(stack.providers.mail, let_through=1)  # the code goes out, the welcome waits
    async for running in beside(stack, "foreign", mail=held):
        receipt, outcome = await register_and_submit_code(running, email)
        assert outcome is ActivationOutcome.ACTIVATED
        await asyncio.wait_for(held.reached.wait(), 10)
        handle = running.client.get_workflow_handle(receipt.registration_id)
        await handle.signal(RegistrationWorkflow.register_again, foreign)
        await asyncio.sleep(0.3)  # the signal reaches the run while the welcome mail is out
        held.release.set()
        async with asyncio.timeout(30):  # a second run would keep the result waiting
            result = await result_of(running, receipt.registration_id)
        assert result.state is RegistrationState.ACTIVE
    assert await runs_of(stack, receipt.registration_id) == [WorkflowExecutionStatus.COMPLETED]
    assert categories(stack, other) == []
    assert await identity(stack).find_principal(other) is None


async def test_a_call_that_meets_the_expiry_mails_no_code_for_it(stack: Stack) -> None:
    """Windows end while no worker runs, and a ``register`` (for one email) and a resend from
    the UI (for another) come in before one does: each workflow task brings the call and the
    expiry together, the call first (signals before timers). No code is mailed for a
    registration about to be undone; the ``register`` starts the next one. About a minute of
    real time: the shortest window is one minute, and the time-skipping server cannot skip to
    a timer while no worker takes its workflow task."""
    again, resent = "rita@example.com", "rob@example.com"
    receipts = {}
    async for worker in beside(stack, "late"):
        for email in (again, resent):
            receipts[email] = await worker.registrations.register(
                email=email, name="Late", password=PASSWORD, activation_ttl=timedelta(minutes=1)
            )
            await wait_for_state(worker, email, RegistrationState.PENDING)
    first_run = await stack.client.get_workflow_handle(receipts[again].registration_id).describe()
    await asyncio.sleep(62)  # both windows end; no worker runs
    assert await register(stack, again, "Rita Again") == receipts[again]
    resend = stack.client.get_workflow_handle(receipts[resent].registration_id)
    await resend.signal(RegistrationWorkflow.resend, ResendRequest(requested_by="support:kim"))
    async for worker in beside(stack, "late"):
        async with asyncio.timeout(30):
            ended = await result_of(worker, receipts[resent].registration_id)
        assert ended.state is RegistrationState.EXPIRED
        await wait_for_state(worker, again, RegistrationState.PENDING)  # the next registration
        await worker.registrations.cancel(again)
    handle = stack.client.get_workflow_handle(receipts[again].registration_id)
    assert (await handle.describe()).run_id != first_run.run_id
    assert categories(stack, resent) == ["customer_activation"]  # no code after the window
    assert categories(stack, again) == ["customer_activation"] * 2  # one per registration


async def test_a_register_that_waits_out_a_lockout_is_kept(stack: Stack) -> None:
    """A ``register`` waits for the code lock behind a resend (its mail held) and a wrong code
    that locks the registration: by its turn nothing is pending, so it is kept and starts once
    the locked registration is undone, instead of being lost to a resend that mails nothing."""
    email = "rune@example.com"
    held = HeldMail(stack.providers.mail, let_through=1)  # the code goes out, the resend waits
    one_try = {"max_attempts_total": 1, "resend_interval": timedelta(0)}
    async for gated in beside(stack, "lock", settings=one_try, mail=held):
        receipt = await register(gated, email)
        await wait_for_state(gated, email, RegistrationState.PENDING)
        wrong = wrong_code(gated.code_for(email))
        resend = asyncio.create_task(gated.registrations.resend(email))
        await asyncio.wait_for(held.reached.wait(), 10)
        code = asyncio.create_task(gated.registrations.submit_code(email, wrong))
        await asyncio.sleep(0.3)  # the code waits for the lock, then the register behind it
        assert await register(gated, email, "Rune Again") == receipt
        await asyncio.sleep(0.3)
        held.release.set()
        assert (await resend).outcome is ResendOutcome.SENT
        assert (await code).outcome is ActivationOutcome.TOO_MANY_ATTEMPTS
        await wait_for_state(gated, email, RegistrationState.PENDING)  # the next registration
        assert await runs_of(stack, receipt.registration_id) == [
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
            WorkflowExecutionStatus.RUNNING,
        ]
        await gated.registrations.cancel(email)


async def test_a_cancel_during_the_welcome_mail_drops_a_register_before_it(stack: Stack) -> None:
    """The account stays active (a cancel after the activation changes nothing), but a
    ``register`` that came before the cancel does not start afterwards."""
    email = "rhea@example.com"
    held = HeldMail(stack.providers.mail, let_through=1)  # the code goes out, the welcome waits
    async for running in beside(stack, "welcomed", mail=held):
        receipt, outcome = await register_and_submit_code(running, email)
        assert outcome is ActivationOutcome.ACTIVATED
        await asyncio.wait_for(held.reached.wait(), 10)
        await register_again_then_cancel(running, receipt, email, held.release)
        async with asyncio.timeout(30):  # a second run would keep the result waiting
            result = await result_of(running, receipt.registration_id)
        assert result.state is RegistrationState.ACTIVE
    assert await runs_of(stack, receipt.registration_id) == [WorkflowExecutionStatus.COMPLETED]
    assert categories(stack, email) == ["customer_activation", "customer_welcome"]
