"""A backend that retries ``submit_code`` or ``resend`` with the same ``request_id`` (after
``NoWorkerAnswered``, a timeout, a lost connection) gets the first answer again: the attempt or
the resend is counted once. Real dev server: the deduplication is Temporal's, by update id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from starter.client import InvalidInput
from tests.helpers import register, result_of, wait_for_state, wrong_code
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
