"""Timers on the time-skipping server: the 24 h expiry, the resend throttle and attempt limits."""

from __future__ import annotations

from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from tests.helpers import (
    categories,
    identity,
    register,
    result_of,
    wait_for_state,
    wrong_code,
)
from tests.outbox import messages_to
from tests.stack import Stack
from workflows.models import ActivationOutcome, RegistrationState, ResendOutcome

EMAIL = "tess@example.com"


async def test_expiry_after_24h_deletes_the_pending_principal(
    time_env: WorkflowEnvironment, time_stack: Stack
) -> None:
    receipt = await register(time_stack, EMAIL)
    await wait_for_state(time_stack, EMAIL, RegistrationState.PENDING)
    code = time_stack.code_for(EMAIL)
    assert await identity(time_stack).find_principal(EMAIL) is not None

    await time_env.sleep(timedelta(hours=23, minutes=59))
    assert (await time_stack.registrations.status(EMAIL)).state is RegistrationState.PENDING
    await time_env.sleep(timedelta(minutes=2))

    result = await result_of(time_stack, receipt.registration_id)
    assert result.state is RegistrationState.EXPIRED
    assert await identity(time_stack).find_principal(EMAIL) is None
    reply = await time_stack.registrations.submit_code(EMAIL, code)
    assert reply.outcome is ActivationOutcome.EXPIRED


async def test_resend_is_throttled_capped_and_replaces_the_code(
    time_env: WorkflowEnvironment, time_stack: Stack
) -> None:
    await register(time_stack, EMAIL)
    await wait_for_state(time_stack, EMAIL, RegistrationState.PENDING)
    first_code = time_stack.code_for(EMAIL)

    throttled = await time_stack.registrations.resend(EMAIL)
    assert throttled.outcome is ResendOutcome.THROTTLED
    assert throttled.next_resend_at is not None
    for sent in range(5):
        await time_env.sleep(timedelta(seconds=61))
        reply = await time_stack.registrations.resend(EMAIL)
        assert reply.outcome is ResendOutcome.SENT
        assert reply.resends_left == 4 - sent
    await time_env.sleep(timedelta(seconds=61))
    assert (await time_stack.registrations.resend(EMAIL)).outcome is ResendOutcome.LIMIT_REACHED
    assert len(messages_to(time_stack.settings.outbox_path, EMAIL)) == 6

    new_code = time_stack.code_for(EMAIL)
    if new_code != first_code:  # a 1-in-a-million collision would make this check meaningless
        stale = await time_stack.registrations.submit_code(EMAIL, first_code)
        assert stale.outcome is ActivationOutcome.INVALID_CODE
    activated = await time_stack.registrations.submit_code(EMAIL, new_code)
    assert activated.outcome is ActivationOutcome.ACTIVATED


async def test_five_wrong_codes_burn_the_code_and_a_resend_does_not_reset_the_total(
    time_env: WorkflowEnvironment, time_stack: Stack
) -> None:
    await register(time_stack, EMAIL)
    await wait_for_state(time_stack, EMAIL, RegistrationState.PENDING)
    code = time_stack.code_for(EMAIL)
    wrong = wrong_code(code)

    replies = [await time_stack.registrations.submit_code(EMAIL, wrong) for _ in range(5)]
    assert [r.outcome for r in replies[:4]] == [ActivationOutcome.INVALID_CODE] * 4
    assert [r.attempts_left for r in replies] == [4, 3, 2, 1, 0]
    assert replies[4].outcome is ActivationOutcome.TOO_MANY_ATTEMPTS
    # The burned code no longer works, even when right.
    burned = await time_stack.registrations.submit_code(EMAIL, code)
    assert burned.outcome is ActivationOutcome.TOO_MANY_ATTEMPTS

    await time_env.sleep(timedelta(seconds=61))
    assert (await time_stack.registrations.resend(EMAIL)).outcome is ResendOutcome.SENT
    status = await time_stack.registrations.status(EMAIL)
    assert status.code_attempts_left == 5
    assert status.attempts_left == 15  # NIST 800-63B: a new code does not reset failures
    reply = await time_stack.registrations.submit_code(EMAIL, time_stack.code_for(EMAIL))
    assert reply.outcome is ActivationOutcome.ACTIVATED


async def test_twenty_wrong_codes_lock_the_registration_and_compensate(
    time_env: WorkflowEnvironment, time_stack: Stack
) -> None:
    receipt = await register(time_stack, EMAIL)
    await wait_for_state(time_stack, EMAIL, RegistrationState.PENDING)
    outcomes = []
    for round_ in range(4):
        if round_:
            await time_env.sleep(timedelta(seconds=61))
            assert (await time_stack.registrations.resend(EMAIL)).outcome is ResendOutcome.SENT
        code = time_stack.code_for(EMAIL)
        wrong = wrong_code(code, offset=7)
        for _ in range(5):
            outcomes.append((await time_stack.registrations.submit_code(EMAIL, wrong)).outcome)
    assert outcomes[-1] is ActivationOutcome.TOO_MANY_ATTEMPTS
    await wait_for_state(time_stack, EMAIL, RegistrationState.LOCKED)
    assert await identity(time_stack).find_principal(EMAIL) is None  # undone at once
    status = await time_stack.registrations.status(EMAIL)
    assert status.state is RegistrationState.LOCKED and status.attempts_left == 0
    # The run holds the email's failure window (24 h from its first wrong code), then ends.
    await time_env.sleep(timedelta(hours=24))
    result = await result_of(time_stack, receipt.registration_id)
    assert result.state is RegistrationState.LOCKED


async def callers_view(stack: Stack, env: WorkflowEnvironment, email: str) -> list[object]:
    """What a caller sees of a registration over its whole window: a wrong code, a resend too
    soon and one a minute later, five wrong codes for the new code, a code after the window."""
    pending = stack.registrations
    seen: list[object] = [await pending.submit_code(email, "000000")]
    too_soon = await pending.resend(email)
    seen.append((too_soon.outcome, too_soon.resends_left))
    await env.sleep(timedelta(seconds=61))
    sent = await pending.resend(email)
    seen.append((sent.outcome, sent.resends_left))
    seen += [await pending.submit_code(email, "000000") for _ in range(5)]
    await env.sleep(timedelta(hours=24))
    seen.append(await pending.submit_code(email, "000000"))
    return seen


async def test_an_email_with_an_account_is_answered_like_a_new_one_until_the_window_ends(
    time_env: WorkflowEnvironment, time_stack: Stack
) -> None:
    owner = "olivia@example.com"
    await register(time_stack, owner)
    await wait_for_state(time_stack, owner, RegistrationState.PENDING)
    activated = await time_stack.registrations.submit_code(owner, time_stack.code_for(owner))
    assert activated.outcome is ActivationOutcome.ACTIVATED

    probe = await register(time_stack, owner)
    await wait_for_state(time_stack, owner, RegistrationState.ALREADY_REGISTERED)  # staff see it
    probed = await callers_view(time_stack, time_env, owner)
    fresh = "nora@example.com"
    await register(time_stack, fresh)
    await wait_for_state(time_stack, fresh, RegistrationState.PENDING)
    if time_stack.code_for(fresh) == "000000":  # one in a million: the probe code is right
        return
    assert probed == await callers_view(time_stack, time_env, fresh)
    assert probed[-1].outcome is ActivationOutcome.EXPIRED  # type: ignore[attr-defined]

    result = await result_of(time_stack, probe.registration_id)
    assert result.state is RegistrationState.ALREADY_REGISTERED
    # The owner was told twice (the start and the resend); no code was ever mailed this time.
    assert categories(time_stack, owner) == [
        "customer_activation",
        "customer_welcome",
        "customer_already_registered",
        "customer_already_registered",
    ]
    principal = await identity(time_stack).find_principal(owner)
    assert principal is not None and principal.active
