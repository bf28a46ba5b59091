"""The provider seam, proven with one small in-memory provider per shape (``tests/shapes.py``):
each runs through the real workflow and worker on the dev server, to an active account and
through its compensations (cancel while pending, a failure half way through activation).

The shapes run in-process (step 5 as one local activity, ``activities/activation.py``) and as
remote providers (one regular activity per call), so both activation paths are covered. Mail goes
to the stack's outbox, as a customer's mailbox would show it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError

from activities.errors import AccountExists, Conflict, InvalidRequest, NotFound
from common.keys import fernet_keys
from common.sealing import Sealer
from tests.helpers import (
    PASSWORD,
    categories,
    local_activities,
    register,
    result_of,
    wait_for_state,
)
from tests.outbox import messages_to
from tests.shapes import (
    CODE_LENGTH,
    LoginAtActivation,
    OneRecord,
    ProviderCodes,
    SeparateRecords,
)
from tests.stack import Stack, beside
from workflows.models import (
    ActivationOutcome,
    ActivationReply,
    CodeSubmission,
    RegistrationState,
    ResendOutcome,
)
from workflows.registration import RegistrationWorkflow

WHERE = pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "remote"])
PROVIDER_CODE = re.compile(rf"[A-Z2-9]{{{CODE_LENGTH}}}")
ONE_STEP = "link_customer_and_activate"
"""The local activity of step 5 when identity and customers both run in-process."""


def new_email(who: str) -> str:
    """Unique per test (and per run: the dev server lives for the session)."""
    return f"{who}-{uuid.uuid4().hex[:10]}@example.com"


async def with_shape(
    stack: Stack, shape: Any, settings: dict[str, Any] | None = None
) -> AsyncIterator[Stack]:
    """A worker beside ``stack`` whose identity and customers are the shape's (mail: the stack's
    outbox)."""
    suffix = uuid.uuid4().hex[:8]
    # The client checks codes against the format the identity provider declares.
    settings = {"code_pattern": shape.identity.capabilities.code_pattern, **(settings or {})}
    async for running in beside(
        stack, suffix, settings=settings, identity=shape.identity, customers=shape.customers
    ):
        yield running


async def pending(stack: Stack, email: str) -> str:
    """Register ``email`` and wait for its code; the registration id."""
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    return receipt.registration_id


async def activate(stack: Stack, email: str) -> ActivationOutcome:
    """Register, submit the mailed (6-digit) code: how the activation went."""
    await pending(stack, email)
    reply = await stack.registrations.submit_code(email, stack.code_for(email))
    return reply.outcome


async def cancelled(stack: Stack, email: str, registration_id: str) -> None:
    """Cancel, and wait until the compensation is done (the run ends with it)."""
    await stack.registrations.cancel(email, reason="customer asked")
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(stack, registration_id)
    assert isinstance(failure.value.cause, CancelledError)
    assert (await stack.registrations.status(email)).state is RegistrationState.CANCELLED


async def failed_with(stack: Stack, email: str, error_type: str) -> None:
    """The run ended failed (compensation done) for a ``error_type`` of a provider."""
    registration_id = stack.registrations.registration_id(email)
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(stack, registration_id)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "RegistrationFailed"
    assert error_type in cause.message
    status = await stack.registrations.status(email)
    assert status.state is RegistrationState.FAILED
    assert status.customer_id is None and status.customer_number is None


async def step_five_ran(stack: Stack, email: str, *, in_process: bool) -> None:
    """In-process providers: step 5 is one local activity; remote ones: regular activities."""
    ran = await local_activities(stack, stack.registrations.registration_id(email))
    assert (ONE_STEP in ran) is in_process, ran


def error(kind: Callable[[str], Exception], message: str) -> Callable[[], Exception]:
    return lambda: kind(message)


# -- Shape 1: separate records (the default) -------------------------------------------------------


@WHERE
async def test_separate_records_activate_the_login_linked_to_a_new_customer(
    stack: Stack, in_process: bool
) -> None:
    shape = SeparateRecords.make(in_process=in_process)
    email = new_email("sep")
    async for shaped in with_shape(stack, shape):
        await pending(shaped, email)
        login = shape.identity.login_for(email)
        assert login is not None and not login.active  # created inactive at sign-up
        reply = await shaped.registrations.submit_code(email, shaped.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED

        status = await shaped.registrations.status(email)
        assert status.state is RegistrationState.ACTIVE
        customer = shape.customers.customer_for(email)
        assert customer is not None and status.customer_number == customer.number
        assert customer.number.startswith("CUST") and not status.linked_existing_customer
        assert login.active and login.customer_id == customer.id == status.customer_id
        assert shape.identity.password_matches(login.id, PASSWORD)
        assert shape.identity.calls.count("create_principal") == 1
        await step_five_ran(shaped, email, in_process=in_process)


async def test_separate_records_cancel_while_pending_deletes_the_login(stack: Stack) -> None:
    shape = SeparateRecords.make()
    email = new_email("sep-cancel")
    async for shaped in with_shape(stack, shape):
        registration_id = await pending(shaped, email)
        assert shape.identity.login_for(email) is not None
        await cancelled(shaped, email, registration_id)
    assert shape.identity.logins == {} and shape.customers.records == {}
    assert shape.identity.calls.count("undo_principal") == 1
    assert "activate_principal" not in shape.identity.calls.names()


@WHERE
async def test_separate_records_failed_login_activation_undoes_customer_and_login(
    stack: Stack, in_process: bool
) -> None:
    shape = SeparateRecords.make(in_process=in_process)
    shape.identity.calls.fail("activate_principal", error(NotFound, "the login is gone"))
    email = new_email("sep-fail")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.FAILED
        await failed_with(shaped, email, "NotFound")
    # The customer was created (the step before), then undone with the login.
    assert shape.customers.calls.count("link_or_create_customer") == 1
    assert shape.customers.records == {} and shape.identity.logins == {}


@WHERE
async def test_separate_records_failed_customer_step_undoes_the_login(
    stack: Stack, in_process: bool
) -> None:
    shape = SeparateRecords.make(in_process=in_process)
    shape.customers.calls.fail("link_or_create_customer", error(InvalidRequest, "bad tenant"))
    email = new_email("sep-cust")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.FAILED
        await failed_with(shaped, email, "InvalidRequest")
    assert "activate_principal" not in shape.identity.calls.names()
    assert shape.customers.records == {} and shape.identity.logins == {}


async def test_separate_records_with_own_customer_ids_undo_the_customer_after_a_failure(
    stack: Stack,
) -> None:
    """``NewCustomer.id``: "providers that assign their own ids may ignore it". Remote, such a
    customer is undone by its own id (``_undo_created_customer``); in-process, by the one-step
    activity that learned it (``activities/activation.py``)."""
    shape = SeparateRecords.make(own_ids=True)
    shape.identity.calls.fail("activate_principal", error(NotFound, "the login is gone"))
    email = new_email("sep-own")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.FAILED
        await failed_with(shaped, email, "NotFound")
    assert shape.identity.logins == {}
    assert shape.customers.records == {}, "the customer created for the registration was left"


async def test_separate_records_with_own_customer_ids_remote_undo_the_customer(
    stack: Stack,
) -> None:
    """The remote path learns the provider's id from the customer step: undone by that id."""
    shape = SeparateRecords.make(in_process=False, own_ids=True)
    shape.identity.calls.fail("activate_principal", error(NotFound, "the login is gone"))
    email = new_email("sep-own-remote")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.FAILED
        await failed_with(shaped, email, "NotFound")
    assert shape.customers.records == {} and shape.identity.logins == {}


# -- Shape 2: one record ---------------------------------------------------------------------------


@WHERE
async def test_one_record_activates_the_record_with_its_customer_part(
    stack: Stack, in_process: bool
) -> None:
    shape = OneRecord.make(in_process=in_process)
    email = new_email("one")
    async for shaped in with_shape(stack, shape):
        await pending(shaped, email)
        record = shape.store.live_for(email)
        assert record is not None and not record.active and not record.login_active
        assert record.number.startswith("CUST")  # the customer part, made at sign-up
        reply = await shaped.registrations.submit_code(email, shaped.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED

        status = await shaped.registrations.status(email)
        assert status.state is RegistrationState.ACTIVE
        assert (status.customer_id, status.customer_number) == (record.id, record.number)
        assert not status.linked_existing_customer
        assert record.active and record.login_active and record.login_id == status.principal_id
        await step_five_ran(shaped, email, in_process=in_process)
    assert shape.customers.calls.log == []  # no customers-role call, ever


async def test_one_record_cancel_while_pending_deactivates_the_record(stack: Stack) -> None:
    shape = OneRecord.make()
    email = new_email("one-cancel")
    async for shaped in with_shape(stack, shape):
        registration_id = await pending(shaped, email)
        await cancelled(shaped, email, registration_id)
    (record,) = shape.store.records.values()  # not deleted: this vendor has no delete
    assert record.deactivated and not record.active and not record.login_active
    assert record.password_hash is None  # the login is unusable
    assert shape.identity.calls.count("undo_principal") == 1
    assert shape.customers.calls.log == []


@WHERE
async def test_one_record_failed_activation_deactivates_the_record(
    stack: Stack, in_process: bool
) -> None:
    shape = OneRecord.make(in_process=in_process)
    shape.identity.calls.fail("activate_principal", error(InvalidRequest, "record locked"))
    email = new_email("one-fail")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.FAILED
        await failed_with(shaped, email, "InvalidRequest")
    (record,) = shape.store.records.values()
    assert record.deactivated and not record.active and not record.login_active
    assert record.password_hash is None
    assert shape.customers.calls.log == []


@WHERE
async def test_one_record_binds_the_login_to_an_existing_record_and_reports_it_linked(
    stack: Stack, in_process: bool
) -> None:
    shape = OneRecord.make(in_process=in_process)
    email = new_email("one-linked")
    existing = shape.store.add_existing(email, "Imported Customer")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.ACTIVATED
        status = await shaped.registrations.status(email)
        assert status.state is RegistrationState.ACTIVE and status.linked_existing_customer
        assert (status.customer_id, status.customer_number) == (existing.id, existing.number)
        result = await result_of(shaped, shaped.registrations.registration_id(email))
        assert result.linked_existing_customer
    assert list(shape.store.records.values()) == [existing]  # no second record
    assert existing.login_active and existing.login_id == status.principal_id
    assert shape.customers.calls.log == []


async def test_one_record_cancel_leaves_an_existing_record_active(stack: Stack) -> None:
    shape = OneRecord.make()
    email = new_email("one-linked-cancel")
    existing = shape.store.add_existing(email, "Imported Customer")
    async for shaped in with_shape(stack, shape):
        registration_id = await pending(shaped, email)
        assert existing.login_id is not None  # bound at sign-up
        await cancelled(shaped, email, registration_id)
    assert existing.active and not existing.deactivated  # the customer stays
    assert existing.login_id is None and not existing.login_active  # the login went
    assert shape.customers.calls.log == []


@WHERE
async def test_one_record_failed_activation_leaves_an_existing_record_active(
    stack: Stack, in_process: bool
) -> None:
    shape = OneRecord.make(in_process=in_process)
    shape.identity.calls.fail("activate_principal", error(Conflict, "record changed"))
    email = new_email("one-linked-fail")
    existing = shape.store.add_existing(email, "Imported Customer")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.FAILED
        await failed_with(shaped, email, "Conflict")
    assert existing.active and not existing.deactivated
    assert existing.login_id is None and not existing.login_active
    assert list(shape.store.records.values()) == [existing]
    assert shape.customers.calls.log == []


# -- Shape 3: the login created at activation ------------------------------------------------------


@WHERE
async def test_login_at_activation_creates_the_login_active_and_linked(
    stack: Stack, in_process: bool
) -> None:
    shape = LoginAtActivation.make(in_process=in_process)
    email = new_email("late")
    async for shaped in with_shape(stack, shape):
        await pending(shaped, email)
        assert shape.identity.logins == {}  # nothing at sign-up; the lookup still ran
        assert shape.identity.calls.names() == ["find_principal"]
        reply = await shaped.registrations.submit_code(email, shaped.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED

        status = await shaped.registrations.status(email)
        assert status.state is RegistrationState.ACTIVE
        login = shape.identity.login_for(email)
        customer = shape.customers.customer_for(email)
        assert login is not None and customer is not None
        assert login.active and login.id == status.principal_id
        assert (login.customer_id, login.customer_number) == (customer.id, customer.number)
        assert status.customer_number == customer.number
        assert shape.identity.password_matches(login.id, PASSWORD)  # unsealed only now
        await step_five_ran(shaped, email, in_process=in_process)
    assert "activate_principal" not in shape.identity.calls.names()
    assert shape.identity.calls.count("create_principal") == 1


async def test_login_at_activation_cancel_while_pending_leaves_nothing(stack: Stack) -> None:
    shape = LoginAtActivation.make()
    email = new_email("late-cancel")
    async for shaped in with_shape(stack, shape):
        registration_id = await pending(shaped, email)
        await cancelled(shaped, email, registration_id)
    assert shape.identity.logins == {} and shape.customers.records == {}
    # The up-front undos ran, and found nothing to undo.
    assert shape.identity.calls.names() == ["find_principal", "undo_principal"]
    assert shape.customers.calls.names() == ["undo_customer"]


@WHERE
async def test_login_at_activation_failed_login_creation_undoes_the_customer(
    stack: Stack, in_process: bool
) -> None:
    shape = LoginAtActivation.make(in_process=in_process)
    shape.identity.calls.fail("create_principal", error(Conflict, "email taken meanwhile"))
    email = new_email("late-fail")
    async for shaped in with_shape(stack, shape):
        assert await activate(shaped, email) is ActivationOutcome.FAILED
        await failed_with(shaped, email, "Conflict")
    assert shape.customers.calls.count("link_or_create_customer") == 1
    assert shape.customers.records == {} and shape.identity.logins == {}


# -- Shape 4: the provider's codes -----------------------------------------------------------------


def mailed_code(stack: Stack, email: str) -> str:
    """The code in the newest mail to ``email``: a provider code (not the 6 digits of ours)."""
    message = messages_to(stack.settings.outbox_path, email)[-1]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    codes = [line for line in body.get_content().splitlines() if PROVIDER_CODE.fullmatch(line)]
    assert len(codes) == 1, body.get_content()
    return str(codes[0])


async def submit(stack: Stack, email: str, code: str) -> ActivationReply:
    """What ``RegistrationClient.submit_code`` does, less its format check (which refuses a
    provider's code: ``test_the_client_takes_a_provider_code``): the code sealed, the update."""
    sealer = Sealer(fernet_keys(stack.settings.seal_key, stack.settings.data_dir))
    handle = stack.client.get_workflow_handle(stack.registrations.registration_id(email))
    reply: ActivationReply = await handle.execute_update(
        RegistrationWorkflow.submit_activation_code,
        CodeSubmission(sealed_code=sealer.seal(code)),
    )
    return reply


def another_code(code: str) -> str:
    """A well-formed provider code that is certainly not ``code``."""
    return ("B" if code[0] == "A" else "A") + code[1:]


@WHERE
async def test_provider_codes_are_mailed_checked_by_us_first_and_confirmed_by_the_provider(
    stack: Stack, in_process: bool
) -> None:
    shape = ProviderCodes.make(in_process=in_process)
    email = new_email("codes")
    async for shaped in with_shape(stack, shape):
        await pending(shaped, email)
        login = shape.identity.login_for(email)
        assert login is not None
        code = mailed_code(shaped, email)
        assert code == shape.identity.codes[login.id].code  # the provider's, as mailed
        assert not re.fullmatch(r"[0-9]{6}", code)

        wrong = await submit(shaped, email, another_code(code))
        assert wrong.outcome is ActivationOutcome.INVALID_CODE
        assert "confirm_code" not in shape.identity.calls.names()  # our HMAC said no first
        assert not login.verified

        right = await submit(shaped, email, code)
        assert right.outcome is ActivationOutcome.ACTIVATED
        assert shape.identity.calls.count("confirm_code") == 1
        assert login.verified and login.active
        status = await shaped.registrations.status(email)
        assert status.state is RegistrationState.ACTIVE
        assert status.customer_number == login.customer_number
        assert login.customer_number is not None and login.customer_number.startswith("CUST")
        await step_five_ran(shaped, email, in_process=in_process)
    assert shape.identity.calls.count("confirm_code") == 1


async def test_a_resend_replaces_the_code_at_the_provider_too(stack: Stack) -> None:
    shape = ProviderCodes.make(max_wrong=5)
    email = new_email("codes-resend")
    async for shaped in with_shape(stack, shape, {"resend_interval": timedelta(0)}):
        await pending(shaped, email)
        login = shape.identity.login_for(email)
        assert login is not None
        old = mailed_code(shaped, email)
        assert (await shaped.registrations.resend(email)).outcome is ResendOutcome.SENT
        new = mailed_code(shaped, email)
        assert new != old and shape.identity.calls.count("new_code") == 2

        stale = await submit(shaped, email, old)
        assert stale.outcome is ActivationOutcome.INVALID_CODE
        assert "confirm_code" not in shape.identity.calls.names()
        assert not await shape.identity.confirm_code(login.id, old)  # the provider says no too
        assert (await submit(shaped, email, new)).outcome is ActivationOutcome.ACTIVATED
        assert login.verified and login.active


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "remote"])
async def test_the_providers_lockout_ends_the_registration_locked(
    stack: Stack, in_process: bool
) -> None:
    """Wrong codes never reach the provider through us, so its limit is reached elsewhere (its
    own page, another client of it): the right code is then refused there, and the registration
    ends locked and is undone."""
    shape = ProviderCodes.make(in_process=in_process, max_wrong=2)
    email = new_email("codes-locked")
    async for shaped in with_shape(stack, shape):
        registration_id = await pending(shaped, email)
        login = shape.identity.login_for(email)
        assert login is not None
        code = mailed_code(shaped, email)
        for _ in range(2):
            assert not await shape.identity.confirm_code(login.id, another_code(code))

        reply = await submit(shaped, email, code)
        assert reply.outcome is ActivationOutcome.TOO_MANY_ATTEMPTS
        await wait_for_state(shaped, email, RegistrationState.LOCKED)
        status = await shaped.registrations.status(email)
        assert status.state is RegistrationState.LOCKED and status.customer_id is None
        assert status.attempts_left == 0
        assert not login.verified and not login.active
        assert shape.identity.logins == {} and shape.customers.records == {}  # undone
        # It holds the email's failure window; staff release it.
        await shaped.registrations.cancel(email, "test over")
        assert (await result_of(shaped, registration_id)).state is RegistrationState.LOCKED


async def test_provider_codes_cancel_while_pending_deletes_the_login(stack: Stack) -> None:
    shape = ProviderCodes.make()
    email = new_email("codes-cancel")
    async for shaped in with_shape(stack, shape):
        registration_id = await pending(shaped, email)
        await cancelled(shaped, email, registration_id)
    assert shape.identity.logins == {} and shape.customers.records == {}
    assert "confirm_code" not in shape.identity.calls.names()


@WHERE
async def test_provider_codes_failed_customer_step_undoes_the_login(
    stack: Stack, in_process: bool
) -> None:
    shape = ProviderCodes.make(in_process=in_process)
    shape.customers.calls.fail("link_or_create_customer", error(InvalidRequest, "bad tenant"))
    email = new_email("codes-fail")
    async for shaped in with_shape(stack, shape):
        await pending(shaped, email)
        reply = await submit(shaped, email, mailed_code(shaped, email))
        assert reply.outcome is ActivationOutcome.FAILED
        await failed_with(shaped, email, "InvalidRequest")
    assert shape.identity.calls.count("confirm_code") == 1
    assert shape.identity.logins == {} and shape.customers.records == {}


async def test_the_client_takes_a_provider_code(stack: Stack) -> None:
    shape = ProviderCodes.make()
    email = new_email("codes-client")
    async for shaped in with_shape(stack, shape):
        await pending(shaped, email)
        reply = await shaped.registrations.submit_code(email, mailed_code(shaped, email))
        assert reply.outcome is ActivationOutcome.ACTIVATED


# -- An account the lookup could not see (AccountExists) ------------------------------------------


@WHERE
async def test_an_account_found_at_activation_ends_already_registered_and_tells_the_owner(
    stack: Stack, in_process: bool
) -> None:
    """A login created only once the address is proven meets an account of another kind (the
    provider raises ``AccountExists``): the customer step 5 created is undone, the owner (who
    just proved the address) is mailed the notice, and the caller hears ``already_registered``."""
    shape = LoginAtActivation.make(in_process=in_process)
    shape.identity.calls.fail("create_principal", error(AccountExists, "a login of another kind"))
    email = new_email("late-exists")
    async for shaped in with_shape(stack, shape):
        registration_id = await pending(shaped, email)
        reply = await shaped.registrations.submit_code(email, shaped.code_for(email))
        assert reply.outcome is ActivationOutcome.ALREADY_REGISTERED
        result = await result_of(shaped, registration_id)
        assert result.state is RegistrationState.ALREADY_REGISTERED
        assert result.customer_id is None and "AccountExists" in (result.reason or "")
        subjects = [
            m["X-Category"] or m["Subject"] for m in messages_to(shaped.settings.outbox_path, email)
        ]
        assert len(subjects) == 2  # the code, then the notice
    assert shape.customers.records == {} and shape.identity.logins == {}


async def test_an_account_found_at_sign_up_is_answered_as_if_pending(stack: Stack) -> None:
    """A login created at sign-up meets an account the lookup could not see (an imported
    customer without a login, at a one-record provider): the caller is answered exactly as for
    an email with an account (no code exists; wrong codes and expiry), and its owner told."""
    shape = SeparateRecords.make()
    shape.identity.calls.fail("create_principal", error(AccountExists, "an imported record"))
    email = new_email("signup-exists")
    async for shaped in with_shape(stack, shape):
        await register(shaped, email)
        await wait_for_state(shaped, email, RegistrationState.ALREADY_REGISTERED)
        status = await shaped.registrations.status(email)
        assert status.reason is not None and "AccountExists" in status.reason  # for staff
        reply = await shaped.registrations.submit_code(email, "123456")
        assert reply.outcome is ActivationOutcome.INVALID_CODE
        assert categories(shaped, email) == ["customer_already_registered"]  # no code
        await shaped.registrations.cancel(email, "test over")
    assert shape.identity.logins == {} and shape.customers.records == {}
