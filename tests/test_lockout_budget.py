"""An email's wrong codes count across its registrations within the failure window (issue 16,
defect 6): registering again after a lockout does not bring a fresh set of guesses."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from tests.helpers import register, result_of, wait_for_state, wrong_code
from tests.outbox import messages_to
from tests.stack import Stack, beside
from workflows.models import ActivationOutcome, RegistrationState

EMAIL = "lou@example.com"
TIGHT = {"max_attempts_per_code": 2, "max_attempts_total": 2, "max_failures_per_window": 4}
"""Two wrong codes lock a registration; the email has four in its window (24 h)."""


async def lock(stack: Stack) -> None:
    """Two wrong codes for the pending registration of ``EMAIL``."""
    wrong = wrong_code(stack.code_for(EMAIL))
    for _ in range(2):
        await stack.registrations.submit_code(EMAIL, wrong)
    await wait_for_state(stack, EMAIL, RegistrationState.LOCKED)


async def test_registering_again_after_a_lockout_brings_no_fresh_guesses(stack: Stack) -> None:
    async for tight in beside(stack, "budget", settings=TIGHT):
        receipt = await register(tight, EMAIL)
        await wait_for_state(tight, EMAIL, RegistrationState.PENDING)
        await lock(tight)

        # Two of the window's four are left: the next registration starts at once with them.
        await register(tight, EMAIL)
        await wait_for_state(tight, EMAIL, RegistrationState.PENDING)
        status = await tight.registrations.status(EMAIL)
        assert (status.attempts_left, status.code_attempts_left) == (2, 2)
        await lock(tight)

        # None left: a register is kept, and no code is mailed, until the window ends.
        mails = len(messages_to(tight.settings.outbox_path, EMAIL))
        await register(tight, EMAIL)
        await asyncio.sleep(0.5)
        status = await tight.registrations.status(EMAIL)
        assert status.state is RegistrationState.LOCKED and status.registered_again
        assert len(messages_to(tight.settings.outbox_path, EMAIL)) == mails
        reply = await tight.registrations.submit_code(EMAIL, tight.code_for(EMAIL))
        assert reply.outcome is ActivationOutcome.NOT_PENDING
        await tight.registrations.cancel(EMAIL, "test over")  # releases it; the outcome stays
        assert (await result_of(tight, receipt.registration_id)).state is RegistrationState.LOCKED


async def test_once_the_window_is_over_a_kept_registration_starts_with_a_full_budget(
    time_env: WorkflowEnvironment, time_stack: Stack
) -> None:
    tight_window = {**TIGHT, "max_failures_per_window": 2}
    async for tight in beside(time_stack, "window-over", settings=tight_window):
        receipt = await register(tight, EMAIL)
        await wait_for_state(tight, EMAIL, RegistrationState.PENDING)
        await lock(tight)
        mails = len(messages_to(tight.settings.outbox_path, EMAIL))
        await register(tight, EMAIL)  # none left: kept until the window (24 h) ends
        await time_env.sleep(timedelta(hours=24))
        await wait_for_state(tight, EMAIL, RegistrationState.PENDING)
        assert len(messages_to(tight.settings.outbox_path, EMAIL)) == mails + 1
        status = await tight.registrations.status(EMAIL)
        assert (status.attempts_left, status.code_attempts_left) == (2, 2)
        reply = await tight.registrations.submit_code(EMAIL, tight.code_for(EMAIL))
        assert reply.outcome is ActivationOutcome.ACTIVATED
        assert (await result_of(tight, receipt.registration_id)).state is RegistrationState.ACTIVE


async def test_a_lockout_without_a_new_registration_ends_with_the_window(
    time_env: WorkflowEnvironment, time_stack: Stack
) -> None:
    async for tight in beside(time_stack, "window", settings=TIGHT):
        receipt = await register(tight, EMAIL)
        await wait_for_state(tight, EMAIL, RegistrationState.PENDING)
        await lock(tight)
        await time_env.sleep(timedelta(hours=24))
        assert (await result_of(tight, receipt.registration_id)).state is RegistrationState.LOCKED


async def test_staff_cancel_releases_a_locked_email(stack: Stack) -> None:
    """The owner asks support: a cancel of the locked registration ends its hold, and the next
    registration has the whole budget again."""
    async for tight in beside(stack, "release", settings=TIGHT):
        await register(tight, EMAIL)
        await wait_for_state(tight, EMAIL, RegistrationState.PENDING)
        await lock(tight)
        await tight.registrations.cancel(EMAIL, "owner verified by phone")
        await register(tight, EMAIL)
        await wait_for_state(tight, EMAIL, RegistrationState.PENDING)
        status = await tight.registrations.status(EMAIL)
        assert (status.attempts_left, status.code_attempts_left) == (2, 2)
