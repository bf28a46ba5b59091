"""End to end on the dev server with the local provider: the ``activate`` signal support staff send
from the Temporal UI, a welcome mail that cannot be sent, and a repeated registration that re-sends
the code once the resend throttle allows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from activities.errors import InvalidRequest
from activities.rendering import ACTIVATION, WELCOME
from activities.roles import MailMessage, MailProvider
from common.keys import fernet_keys
from common.sealing import Sealer
from tests.helpers import (
    categories,
    customers,
    eventually,
    identity,
    register,
    result_of,
    wait_for_state,
    wrong_code,
)
from tests.outbox import messages_to
from tests.stack import Stack, beside, make_settings, running_stack
from workflows.models import (
    ActivationOutcome,
    CodeSubmission,
    RegistrationResult,
    RegistrationState,
)
from workflows.registration import RegistrationWorkflow


def submission(stack: Stack, code: str, *, sealed: bool) -> CodeSubmission:
    """A code as support staff type it into the UI (plain), or sealed with the worker's seal key
    as the starter sends it."""
    if not sealed:
        return CodeSubmission(code=code)
    sealer = Sealer(fernet_keys(stack.settings.seal_key, stack.settings.data_dir))
    return CodeSubmission(sealed_code=sealer.seal(code))


async def assert_active_with_customer(stack: Stack, email: str, result: RegistrationResult) -> None:
    """The result, the status query and the SQLite rows all say: active, linked to a customer."""
    assert result.state is RegistrationState.ACTIVE
    assert result.customer_id is not None and result.customer_number is not None
    assert not result.linked_existing_customer
    status = await stack.registrations.status(email)
    assert status.state is RegistrationState.ACTIVE and status.reason is None
    assert status.customer_id == result.customer_id
    principal = await identity(stack).find_principal(email)
    assert principal is not None and principal.active
    assert principal.customer_id == result.customer_id
    customer = await customers(stack).find_customer(email)
    assert customer is not None
    assert (customer.id, customer.number) == (result.customer_id, result.customer_number)


# -- 1. The ``activate`` signal -----------------------------------------------------------------


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_activate_signal_with_the_mailed_code_activates(stack: Stack, sealed: bool) -> None:
    email = f"signal.{'sealed' if sealed else 'plain'}@example.com"
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)

    handle = stack.client.get_workflow_handle(receipt.registration_id)
    await handle.signal(
        RegistrationWorkflow.activate, submission(stack, stack.code_for(email), sealed=sealed)
    )

    await wait_for_state(stack, email, RegistrationState.ACTIVE)  # bounded, unlike the result
    result = await result_of(stack, receipt.registration_id)
    await assert_active_with_customer(stack, email, result)
    assert categories(stack, email) == [ACTIVATION, WELCOME]


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
async def test_wrong_code_by_activate_signal_costs_one_attempt_and_stays_pending(
    stack: Stack, sealed: bool
) -> None:
    email = f"signal.wrong.{'sealed' if sealed else 'plain'}@example.com"
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    before = await stack.registrations.status(email)
    assert (before.code_attempts_left, before.attempts_left) == (5, 20)
    code = stack.code_for(email)

    handle = stack.client.get_workflow_handle(receipt.registration_id)
    await handle.signal(
        RegistrationWorkflow.activate, submission(stack, wrong_code(code), sealed=sealed)
    )

    async def attempt_counted() -> bool:
        return (await stack.registrations.status(email)).code_attempts_left < 5

    await eventually(attempt_counted, "the wrong code is counted")
    status = await stack.registrations.status(email)
    assert status.state is RegistrationState.PENDING
    assert (status.code_attempts_left, status.attempts_left) == (4, 19)
    assert status.customer_id is None
    principal = await identity(stack).find_principal(email)
    assert principal is not None and not principal.active
    assert await customers(stack).find_customer(email) is None
    # The signal's failure did not spend the code: the mailed one still activates.
    reply = await stack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED


@pytest.mark.parametrize(
    ("typed", "code"),
    [('"123456"', "123456"), ("123456", "123456"), ('{"code": 123456}', "123456")],
    ids=["bare-string", "bare-number", "number-field"],
)
def test_code_typed_as_json_in_the_ui_is_the_code(typed: str, code: str) -> None:
    """What the UI's signal form sends for each way staff may type a code."""
    assert CodeSubmission.model_validate_json(typed).code == code


async def test_bare_code_by_activate_signal_activates(stack: Stack) -> None:
    email = "signal.bare@example.com"
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)

    handle = stack.client.get_workflow_handle(receipt.registration_id)
    await handle.signal("activate", stack.code_for(email))  # a JSON string, as typed in the UI

    await wait_for_state(stack, email, RegistrationState.ACTIVE)
    await assert_active_with_customer(stack, email, await result_of(stack, receipt.registration_id))


async def test_malformed_activate_signal_is_dropped_without_logging_the_code(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK logs and drops a signal whose argument does not validate; the log line names the
    problem, never the value typed."""
    email = "signal.malformed@example.com"
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    code = stack.code_for(email)

    handle = stack.client.get_workflow_handle(receipt.registration_id)
    await handle.signal("activate", {"code": code, "sealed_code": code})  # both: malformed

    async def dropped() -> bool:
        return "dropping the signal" in caplog.text

    await eventually(dropped, "the SDK drops the malformed signal")
    assert "exactly one of 'code' or 'sealed_code'" in caplog.text
    assert code not in caplog.text
    status = await stack.registrations.status(email)
    assert status.state is RegistrationState.PENDING
    assert (status.code_attempts_left, status.attempts_left) == (5, 20)


# -- 2. The welcome mail is best effort ---------------------------------------------------------


class WelcomeRejectingMail:
    """The real outbox provider, except that the provider refuses every welcome mail with a
    non-retryable error; records the category of every send the workflow attempts."""

    def __init__(self, inner: MailProvider) -> None:
        self.inner = inner
        self.in_process = inner.in_process
        self.attempts: list[str] = []

    async def send(self, message: MailMessage) -> None:
        self.attempts.append(message.category)
        if message.category == WELCOME:
            raise InvalidRequest("mailbox rejected the welcome mail")
        await self.inner.send(message)

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def welcome_rejected(
    stack: Stack,
) -> AsyncIterator[tuple[WelcomeRejectingMail, Stack]]:
    """A second worker whose mail provider rejects the welcome (same SQLite file and outbox)."""
    mail = WelcomeRejectingMail(stack.providers.mail)
    async for running in beside(stack, "w", mail=mail):
        yield mail, running


async def test_failed_welcome_mail_does_not_fail_the_registration(
    welcome_rejected: tuple[WelcomeRejectingMail, Stack],
) -> None:
    mail, rejecting = welcome_rejected
    email = "welcome.wes@example.com"
    receipt = await register(rejecting, email)
    await wait_for_state(rejecting, email, RegistrationState.PENDING)

    reply = await rejecting.registrations.submit_code(email, rejecting.code_for(email))
    assert reply.outcome is ActivationOutcome.ACTIVATED

    result = await result_of(rejecting, receipt.registration_id)  # raises if the workflow failed
    await assert_active_with_customer(rejecting, email, result)
    assert result.reason is None
    # The welcome was attempted once (non-retryable), rejected, and nothing was undone.
    assert mail.attempts == [ACTIVATION, WELCOME]
    assert categories(rejecting, email) == [ACTIVATION]


# -- 3. A repeated registration re-sends the code -----------------------------------------------

RESEND_INTERVAL = timedelta(seconds=1)


async def test_repeated_registration_resends_a_new_code_after_the_throttle(
    dev_env: Any, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, resend_interval=RESEND_INTERVAL)
    email = "again.abe@example.com"
    async for quick in running_stack(dev_env.client, settings):
        first = await register(quick, email)
        await wait_for_state(quick, email, RegistrationState.PENDING)
        first_code = quick.code_for(email)
        await asyncio.sleep(RESEND_INTERVAL.total_seconds() + 0.5)

        second = await register(quick, email, "Abe Again")
        assert second == first

        async def second_mail() -> bool:
            return len(messages_to(settings.outbox_path, email)) >= 2

        await eventually(second_mail, "a second activation mail")
        assert categories(quick, email) == [ACTIVATION, ACTIVATION]
        second_code = quick.code_for(email)
        assert second_code != first_code  # fresh random codes: equal once in a million
        assert (await quick.registrations.status(email)).resends_left == 4

        stale = await quick.registrations.submit_code(email, first_code)
        assert stale.outcome is ActivationOutcome.INVALID_CODE
        reply = await quick.registrations.submit_code(email, second_code)
        assert reply.outcome is ActivationOutcome.ACTIVATED
        result = await result_of(quick, first.registration_id)
        await assert_active_with_customer(quick, email, result)

        runs = [
            execution
            async for execution in quick.client.list_workflows(
                # The server is shared by the session: only this stack's task queue counts.
                f"WorkflowId = '{first.registration_id}' AND TaskQueue = '{settings.task_queue}'"
            )
        ]
        assert len(runs) == 1
