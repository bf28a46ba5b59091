"""A backend that retries ``submit_code`` or ``resend`` with the same ``request_id`` (after
``NoWorkerAnswered``, a timeout, a lost connection) gets the first answer again: the attempt or
the resend is counted once, within the registration's run. Real dev server: the deduplication is
Temporal's, by update id."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from starter.client import InvalidInput
from tests.doubles import HeldRejectingIdentity
from tests.helpers import identity, register, result_of, wait_for_state, wrong_code
from tests.outbox import messages_to
from tests.stack import Stack, beside
from workflows.models import ActivationOutcome, RegistrationState, ResendOutcome


async def pending(stack: Stack) -> str:
    """A new email with a registration waiting for its code."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    return email


@pytest.mark.parametrize(
    ("first_id", "second_id", "counted"),
    [("req-1", "req-1", 1), ("req-1", "req-2", 2), (None, None, 2)],
    ids=["same request id", "other request ids", "no request id"],
)
async def test_a_wrong_code_retried_with_its_request_id_counts_once(
    stack: Stack, first_id: str | None, second_id: str | None, counted: int
) -> None:
    registrations = stack.registrations
    email = await pending(stack)
    wrong = wrong_code(stack.code_for(email))
    before = await registrations.status(email)

    first = await registrations.submit_code(email, wrong, request_id=first_id)
    second = await registrations.submit_code(email, wrong, request_id=second_id)
    assert first.outcome is second.outcome is ActivationOutcome.INVALID_CODE
    assert first.attempts_left == before.code_attempts_left - 1  # left for this code
    assert second.attempts_left == before.code_attempts_left - counted  # the same when repeated
    after = await registrations.status(email)
    assert after.attempts_left == before.attempts_left - counted
    assert after.code_attempts_left == before.code_attempts_left - counted


async def test_a_code_retried_after_its_activation_is_answered_activated(stack: Stack) -> None:
    """Also once the run has closed, when a new call is told that nothing is pending: Temporal
    keeps the outcome of a completed update with its run."""
    registrations = stack.registrations
    email = await pending(stack)
    code = stack.code_for(email)
    request_id = f"activation-{uuid.uuid4()}"
    first = await registrations.submit_code(email, code, request_id=request_id)
    assert first.outcome is ActivationOutcome.ACTIVATED
    await result_of(stack, registrations.registration_id(email))  # closed after the welcome mail
    assert await registrations.submit_code(email, code, request_id=request_id) == first


@pytest.fixture
async def unthrottled(stack: Stack) -> AsyncIterator[Stack]:
    """A worker whose registrations may resend at once (no minute between codes)."""
    async for worker in beside(stack, "unthrottled", settings={"resend_interval": timedelta(0)}):
        yield worker


async def test_a_resend_retried_with_its_request_id_sends_one_code(unthrottled: Stack) -> None:
    registrations = unthrottled.registrations
    email = await pending(unthrottled)
    before = await registrations.status(email)

    def mails() -> int:
        return len(messages_to(unthrottled.settings.outbox_path, email))

    first = await registrations.resend(email, request_id="resend-1")
    again = await registrations.resend(email, request_id="resend-1")
    assert first == again and first.outcome is ResendOutcome.SENT
    assert first.resends_left == before.resends_left - 1
    assert (await registrations.status(email)).resends_left == before.resends_left - 1
    assert mails() == 2  # the first code, and one resent
    for request_id in ("resend-2", None, None):  # other ids, or none: each call sends
        assert (await registrations.resend(email, request_id=request_id)).outcome is (
            ResendOutcome.SENT
        )
    assert (await registrations.status(email)).resends_left == before.resends_left - 4
    assert mails() == 5


async def test_one_request_id_for_a_code_and_a_resend_names_two_calls(unthrottled: Stack) -> None:
    """The update id is the caller's id behind the update's name: a resend given the id of a
    code (or a code the id of a resend) is a call of its own, not answered with the other's
    reply, which would not even decode as its own. Each one's retry still counts once."""
    registrations = unthrottled.registrations
    email = await pending(unthrottled)
    before = await registrations.status(email)

    wrong = wrong_code(unthrottled.code_for(email))
    code_first = await registrations.submit_code(email, wrong, request_id="shared-1")
    assert code_first.outcome is ActivationOutcome.INVALID_CODE
    resend_then = await registrations.resend(email, request_id="shared-1")
    assert resend_then.outcome is ResendOutcome.SENT
    resend_first = await registrations.resend(email, request_id="shared-2")
    assert resend_first.outcome is ResendOutcome.SENT
    wrong = wrong_code(unthrottled.code_for(email))  # of the code resent last
    code_then = await registrations.submit_code(email, wrong, request_id="shared-2")
    assert code_then.outcome is ActivationOutcome.INVALID_CODE

    assert await registrations.submit_code(email, wrong, request_id="shared-1") == code_first
    assert await registrations.resend(email, request_id="shared-2") == resend_first
    after = await registrations.status(email)
    assert after.attempts_left == before.attempts_left - 2
    assert after.resends_left == before.resends_left - 2
    assert len(messages_to(unthrottled.settings.outbox_path, email)) == 3


async def test_a_request_id_repeated_once_a_new_registration_started_runs_in_it(
    stack: Stack,
) -> None:
    """Temporal keeps update ids per run. Here a ``register`` arrives while the cancelled run
    waits for its undo (held at the provider), and starts as the next run of the workflow ID
    once the undo is done (continue-as-new): the first run's request id is unknown to it, and a
    retry with that id is checked there afresh, against the new registration's code."""
    held = HeldRejectingIdentity(identity(stack), rejections=0)
    async for gated in beside(stack, "again", identity=held):
        registrations = gated.registrations
        email = await pending(gated)
        before = await registrations.status(email)
        wrong = wrong_code(gated.code_for(email))
        first = await registrations.submit_code(email, wrong, request_id="before-the-end")
        assert first.outcome is ActivationOutcome.INVALID_CODE
        await registrations.cancel(email)
        await asyncio.wait_for(held.reached.wait(), 10)  # cancelled; its undo held
        await register(gated, email)  # kept by the run, started once its undo is done
        held.release.set()
        await wait_for_state(gated, email, RegistrationState.PENDING)  # the new registration
        assert (await registrations.status(email)).attempts_left == before.attempts_left

        again = await registrations.submit_code(email, wrong, request_id="before-the-end")
        assert again.outcome is ActivationOutcome.INVALID_CODE  # checked, not the first reply
        assert (await registrations.status(email)).attempts_left == before.attempts_left - 1
        await registrations.cancel(email)


@pytest.mark.parametrize(
    ("request_id", "words"),
    [
        ("", "at least 1 character"),
        ("r" * 201, "at most 200 characters"),
        ("retry\n2", "control characters or line breaks"),
        ("retry\u2028two", "control characters or line breaks"),
        ("retry\x00", "control characters"),
        ("req\u202e1", "bidirectional"),
    ],
)
async def test_a_bad_request_id_is_invalid_input_and_counts_nothing(
    stack: Stack, request_id: str, words: str
) -> None:
    registrations = stack.registrations
    email = await pending(stack)
    before = await registrations.status(email)
    wrong = wrong_code(stack.code_for(email))
    for call in (
        registrations.submit_code(email, wrong, request_id=request_id),
        registrations.resend(email, request_id=request_id),
    ):
        with pytest.raises(InvalidInput) as refused:
            await call
        assert refused.value.field == "request_id" and words in str(refused.value)
    assert await registrations.status(email) == before
    longest = await registrations.submit_code(email, wrong, request_id="r" * 200)
    assert longest.attempts_left == before.code_attempts_left - 1
