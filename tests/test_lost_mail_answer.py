"""A lost answer does not kill the mailed code: the mail provider takes the activation mail, the
answer is lost (a retryable error), and the retried ``issue_activation`` mails the same code
under the same idempotency key, so the outbox keeps one mail and its code activates."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from temporalio import activity

from activities.errors import ProviderUnavailable
from activities.rendering import ACTIVATION
from activities.roles import MailMessage, MailProvider
from tests.helpers import register, wait_for_state
from tests.outbox import code_in, messages_to
from tests.stack import Stack, beside
from workflows.models import ActivationOutcome, RegistrationState


@dataclass(frozen=True)
class Attempt:
    run_id: str | None
    attempt: int
    local: bool
    idempotency_key: str
    code: str


class AnswerLostOnce:
    """The stack's mail provider whose first activation send goes out and then fails as a lost
    answer would (a timeout after the provider processed it), on the local or remote path."""

    def __init__(self, inner: MailProvider, in_process: bool) -> None:
        self.inner = inner
        self.in_process = in_process
        self.attempts: list[Attempt] = []

    async def send(self, message: MailMessage) -> None:
        await self.inner.send(message)
        if message.category != ACTIVATION:
            return
        info = activity.info()
        self.attempts.append(
            Attempt(
                info.workflow_run_id,
                info.attempt,
                info.is_local,
                message.idempotency_key,
                message.redact[0],
            )
        )
        if len(self.attempts) == 1:
            raise ProviderUnavailable("the mail went out, its answer was lost")

    async def aclose(self) -> None:
        """The stack's provider is closed by the stack."""


@pytest.mark.parametrize("in_process", [True, False], ids=["local", "remote"])
async def test_a_retry_after_a_lost_answer_mails_the_same_code_once(
    stack: Stack, in_process: bool
) -> None:
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    lossy = AnswerLostOnce(stack.providers.mail, in_process)
    async for lossy_stack in beside(stack, "lost-answer", mail=lossy):
        receipt = await register(lossy_stack, email)
        await wait_for_state(lossy_stack, email, RegistrationState.PENDING)

        first, retry = lossy.attempts
        run = await lossy_stack.client.get_workflow_handle(receipt.registration_id).describe()
        assert first.run_id == retry.run_id == run.run_id  # also in a local activity
        assert (first.attempt, retry.attempt) == (1, 2)
        assert first.local is retry.local is in_process
        assert retry.idempotency_key == first.idempotency_key
        assert retry.code == first.code

        (mail,) = messages_to(stack.settings.outbox_path, email)  # one mail: deduplicated by key
        assert code_in(mail) == first.code
        reply = await lossy_stack.registrations.submit_code(email, first.code)
        assert reply.outcome is ActivationOutcome.ACTIVATED
