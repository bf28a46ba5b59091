"""What the client raises: one base for all of its own exceptions, ``NotPending`` for a state that
does not allow the action, and the fallback message for a namespace without the attributes."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from temporalio.api.operatorservice.v1 import (
    RemoveSearchAttributesRequest,
)
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.exceptions import TemporalError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from common.converter import data_converter
from common.keys import KeyConfigError
from common.settings import InvalidSettings, Settings
from starter import client as client_module
from starter.client import (
    Busy,
    InvalidInput,
    NotPending,
    NoWorkerAnswered,
    RegistrationClient,
    RegistrationError,
    SealKeyMismatch,
    ServerUnreachable,
    UnknownRegistration,
)
from tests.doubles import HeldMail, HeldRejectingIdentity
from tests.helpers import (
    PASSWORD,
    eventually,
    identity,
    register,
    result_of,
    wait_for_state,
)
from tests.stack import (
    Stack,
    add_search_attributes,
    bare_namespace,
    beside,
    run_create_commands,
)
from tests.test_bad_input import server_of
from workflows import visibility
from workflows.models import ActivationOutcome, RegistrationState

OLD_BASES: dict[type[Exception], type[Exception]] = {
    InvalidInput: ValueError,
    UnknownRegistration: LookupError,
    NoWorkerAnswered: TemporalError,
    SealKeyMismatch: KeyConfigError,
    ServerUnreachable: ConnectionError,  # and common.temporal.ServerUnreachable, as before
}
"""The base each exception had before ``RegistrationError``: ``except`` clauses written for it
must still catch it."""


def test_every_exception_of_the_client_is_a_registration_error_and_keeps_its_old_base() -> None:
    defined = {
        value
        for value in vars(client_module).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == client_module.__name__
    }
    assert defined == {RegistrationError, NotPending, Busy, *OLD_BASES}  # list a new one here
    for exception in defined:
        assert issubclass(exception, RegistrationError), exception
    for exception, base in OLD_BASES.items():
        assert issubclass(exception, base), exception
    assert not issubclass(NotPending, InvalidInput)  # a state conflict, not bad input


async def raised(call: Awaitable[Any]) -> RegistrationError:
    with pytest.raises(RegistrationError) as error:
        await call
    return error.value


async def test_the_client_raises_registration_errors(stack: Stack) -> None:
    """Each exception as a real call raises it, caught by the one base."""
    registrations = stack.registrations
    email, elsewhere = (f"{uuid.uuid4().hex[:12]}@example.com" for _ in range(2))
    await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    assert stack.settings.seal_key is not None
    foreign_key = f"{Fernet.generate_key().decode()},{stack.settings.seal_key.get_secret_value()}"
    foreign_seal = RegistrationClient(
        stack.client, stack.settings.model_copy(update={"seal_key": SecretStr(foreign_key)})
    )
    unpolled = RegistrationClient(  # its registrations run on a task queue no worker polls
        stack.client,
        stack.settings.model_copy(update={"task_queue": f"nobody-{uuid.uuid4()}"}),
        answer_timeout=timedelta(seconds=1),
    )
    receipt = await unpolled.register(email=elsewhere, name="Nobody", password=PASSWORD)

    assert type(await raised(registrations.status("not-an-email"))) is InvalidInput
    bad_request = registrations.submit_code(email, "123456", request_id="")
    assert type(await raised(bad_request)) is InvalidInput
    assert type(await raised(registrations.status("nobody@example.com"))) is UnknownRegistration
    assert type(await raised(unpolled.resend(elsewhere))) is NoWorkerAnswered
    sealed_elsewhere = foreign_seal.submit_code(email, stack.code_for(email))
    assert type(await raised(sealed_elsewhere)) is SealKeyMismatch
    await registrations.cancel(email)
    await wait_for_state(stack, email, RegistrationState.CANCELLED)
    assert type(await raised(registrations.cancel(email))) is NotPending
    await stack.client.get_workflow_handle(receipt.registration_id).terminate()


async def test_approve_and_cancel_of_an_ended_registration_raise_not_pending(
    stack: Stack,
) -> None:
    """Not ``InvalidInput`` naming the email, as before: the email was fine, the registration is
    past the point where the action applies, and ``state`` says where it is."""
    registrations = stack.registrations
    active, cancelled, terminated = (f"{uuid.uuid4().hex[:12]}@example.com" for _ in range(3))
    receipts = {email: await register(stack, email) for email in (active, cancelled, terminated)}
    for email in receipts:
        await wait_for_state(stack, email, RegistrationState.PENDING)
    await registrations.approve(active, "support:kim", "identity checked by phone")
    await result_of(stack, receipts[active].registration_id)  # ended: active
    await registrations.cancel(cancelled, "support: asked by the customer")
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, receipts[cancelled].registration_id)  # ended: cancelled
    handle = stack.client.get_workflow_handle(receipts[terminated].registration_id)
    await handle.terminate("by hand")

    for email, state in ((active, "active"), (cancelled, "cancelled")):
        with pytest.raises(NotPending) as approving:
            await registrations.approve(email, "support:kim", "identity checked by phone")
        assert approving.value.state == state
        assert str(approving.value) == f"the registration of {email} is {state}, not pending"
        with pytest.raises(NotPending) as cancelling:
            await registrations.cancel(email)
        assert cancelling.value.state == state
        assert str(cancelling.value) == f"the registration of {email} is {state}, not running"
    # Terminated, its status attribute still says pending, and a query replays it up to the
    # termination and says pending too: Temporal's status of the run is told.
    with pytest.raises(NotPending) as approving:
        await registrations.approve(terminated, "support:kim", "identity checked by phone")
    assert approving.value.state == "terminated"
    assert str(approving.value) == f"the registration of {terminated} is terminated, not pending"
    with pytest.raises(NotPending) as cancelling:
        await registrations.cancel(terminated)
    assert cancelling.value.state == "terminated"


@pytest.mark.parametrize("action", ["approve", "cancel"])
async def test_a_run_that_closes_between_the_check_and_the_action_is_not_pending(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """The run is found running (and pending), then terminated before the signal or the cancel
    reaches it: Temporal answers "workflow execution already completed", told as
    ``NotPending`` with the state the run ended in, not as a raw ``RPCError``."""
    registrations = stack.registrations
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    handle = stack.client.get_workflow_handle(receipt.registration_id)
    find_open_run = registrations._open_run

    async def closing_after_the_check(*args: Any) -> Any:
        found = await find_open_run(*args)
        await handle.terminate("between the check and the action")
        return found

    monkeypatch.setattr(registrations, "_open_run", closing_after_the_check)
    with pytest.raises(NotPending) as refused:
        if action == "approve":
            await registrations.approve(email, "support:kim", "identity checked by phone")
        else:
            await registrations.cancel(email)
    assert refused.value.state == "terminated"
    not_what = "not pending" if action == "approve" else "not running"
    assert str(refused.value) == f"the registration of {email} is terminated, {not_what}"


def continued_after_the_check(stack: Stack, email: str, held: HeldMail) -> Any:
    """``_open_run`` of ``stack``'s client, after which the run found is approved, gets a
    ``register`` for its email during its held welcome mail, and continues as new into it."""
    find_open_run = stack.registrations._open_run

    async def open_run(*args: Any) -> Any:
        run, description = await find_open_run(*args)
        await run.signal("approve", {"operator": "support:kim", "reason": "by phone"})
        await asyncio.wait_for(held.reached.wait(), 10)
        await register(stack, email)  # kept until the run ends
        held.release.set()

        async def closed() -> bool:
            return (await run.describe()).status is not WorkflowExecutionStatus.RUNNING

        await eventually(closed, "the run continuing as new")
        return run, description

    return open_run


async def test_a_cancel_never_reaches_the_registration_a_run_continued_into(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run is found pending; before the cancel arrives it is approved, a ``register`` for the
    same email comes in during its welcome mail, and the run continues as new into that
    registration. The cancel was meant for the run found: it is ``NotPending`` with the state
    that run ended in, and the new registration is left running, not cancelled."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    held = HeldMail(stack.providers.mail, let_through=1)  # the code goes out, the welcome waits
    async for welcoming in beside(stack, "continued", mail=held):
        registrations = welcoming.registrations
        receipt = await register(welcoming, email)
        await wait_for_state(welcoming, email, RegistrationState.PENDING)
        first = await welcoming.client.get_workflow_handle(receipt.registration_id).describe()
        opening = continued_after_the_check(welcoming, email, held)
        monkeypatch.setattr(registrations, "_open_run", opening)
        with pytest.raises(NotPending) as cancelling:
            await registrations.cancel(email)
        assert cancelling.value.state == "active"
        assert str(cancelling.value) == f"the registration of {email} is active, not running"
        monkeypatch.undo()

        ended = welcoming.client.get_workflow_handle(first.id, run_id=first.run_id)
        assert (await ended.describe()).status is WorkflowExecutionStatus.CONTINUED_AS_NEW
        # The next registration: the email has an account now.
        await wait_for_state(welcoming, email, RegistrationState.ALREADY_REGISTERED)
        latest = await welcoming.client.get_workflow_handle(first.id).describe()
        assert latest.run_id != first.run_id
        assert latest.status is WorkflowExecutionStatus.RUNNING
        assert not latest.raw_description.workflow_extended_info.cancel_requested
        await registrations.cancel(email)  # so that the worker stops with nothing open


async def test_a_cancel_whose_check_afterwards_fails_is_reported_done(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Temporal accepted the cancel, and only the description that checks whether it reached a
    running run failed: the cancel went out, so ``cancel`` returns, and the run is undone."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    registrations = stack.registrations
    receipt = await register(stack, email)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    find_open_run = registrations._open_run

    class CheckFails:
        def __init__(self, run: WorkflowHandle[Any, Any]) -> None:
            self.cancel = run.cancel

        async def describe(self) -> None:
            raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")

    async def check_fails(*args: Any) -> Any:
        run, description = await find_open_run(*args)
        return CheckFails(run), description

    monkeypatch.setattr(registrations, "_open_run", check_fails)
    await registrations.cancel(email)  # no error
    with pytest.raises(WorkflowFailureError):
        await result_of(stack, receipt.registration_id)
    monkeypatch.undo()
    assert (await registrations.status(email)).state is RegistrationState.CANCELLED


@pytest.mark.parametrize("search_attributes", [True, False], ids=["recorded", "queried"])
async def test_cancel_of_a_decided_registration_whose_run_is_open_is_not_pending(
    stack: Stack, search_attributes: bool
) -> None:
    """The outcome is decided, but the run is still open: ``active`` while the welcome mail is
    held, ``cancelled`` while its undo is held. The workflow would ignore a cancel (an outcome,
    once decided, stays), so it is not reported as done. ``already_registered`` stays
    cancellable: it ends Canceled in Temporal, its status unchanged. The state is the one the
    run recorded in its search attribute, or, for a registration started without search
    attributes, the status query's."""
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    settings = {"search_attributes": search_attributes}

    held = HeldMail(stack.providers.mail, let_through=1)  # the code goes out, the welcome waits
    async for welcoming in beside(stack, "welcome", settings=settings, mail=held):
        registrations = welcoming.registrations
        receipt = await register(welcoming, email)
        await wait_for_state(welcoming, email, RegistrationState.PENDING)
        reply = await registrations.submit_code(email, welcoming.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED
        await asyncio.wait_for(held.reached.wait(), 10)
        with pytest.raises(NotPending) as cancelling:
            await registrations.cancel(email)
        assert cancelling.value.state == "active"
        assert str(cancelling.value) == (
            f"the registration of {email} is already active: a cancel would change nothing"
        )
        held.release.set()
        assert (await result_of(welcoming, receipt.registration_id)).state is (
            RegistrationState.ACTIVE
        )

        second = await register(welcoming, email)  # the email has an account now
        await wait_for_state(welcoming, email, RegistrationState.ALREADY_REGISTERED)
        await registrations.cancel(email)
        with pytest.raises(WorkflowFailureError):
            await result_of(welcoming, second.registration_id)
        status = await registrations.status(email)
        assert status.state is RegistrationState.ALREADY_REGISTERED

    other = f"{uuid.uuid4().hex[:12]}@example.com"
    undoing = HeldRejectingIdentity(identity(stack), rejections=0)
    async for held_undo in beside(stack, "undo", settings=settings, identity=undoing):
        registrations = held_undo.registrations
        receipt = await register(held_undo, other)
        await wait_for_state(held_undo, other, RegistrationState.PENDING)
        await registrations.cancel(other)
        await asyncio.wait_for(undoing.reached.wait(), 10)
        with pytest.raises(NotPending) as cancelling:
            await registrations.cancel(other)
        assert cancelling.value.state == "cancelled"
        undoing.release.set()
        with pytest.raises(WorkflowFailureError):
            await result_of(held_undo, receipt.registration_id)


async def test_a_start_refused_for_missing_search_attributes_names_both_ways_to_create_them(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """The start's own error, ``_missing_search_attributes``: the client checked the namespace
    before its first start, and the attributes were removed after that (or a key that may not
    list them skipped the check, as on Temporal Cloud). The message names the Temporal CLI
    commands, which work pasted as they are, and the ``tcld`` command of Temporal Cloud."""
    namespace = await bare_namespace(dev_env)
    await add_search_attributes(dev_env, namespace)
    on_namespace = await Client.connect(
        server_of(dev_env), namespace=namespace, data_converter=data_converter(settings)
    )
    registrations = RegistrationClient(on_namespace, settings)
    await registrations.register(email="kim@example.com", name="Kim", password=PASSWORD)
    await dev_env.client.operator_service.remove_search_attributes(
        RemoveSearchAttributesRequest(
            namespace=namespace, search_attributes=[key.name for key in visibility.ALL]
        )
    )

    with pytest.raises(InvalidSettings) as refused:
        await registrations.register(email="lee@example.com", name="Lee", password=PASSWORD)
    message = str(refused.value)
    assert message.startswith("REGISTRATION_SEARCH_ATTRIBUTES: ")
    assert "has no mapping defined for search attribute" in message  # the server's own words
    assert "Create the search attributes (temporal operator search-attribute create" in message
    assert (
        f"; on Temporal Cloud: tcld namespace search-attributes add -n {namespace}"
        " --sa RegistrationStatus=Keyword --sa RegistrationEmail=Keyword"
        " --sa CustomerNumber=Keyword --sa ActivationExpiresAt=Datetime)" in message
    )
    fallback = "or set REGISTRATION_SEARCH_ATTRIBUTES=false to start registrations without them"
    assert message.endswith(f"Datetime), {fallback}")
    assert await run_create_commands(server_of(dev_env), message) == len(visibility.ALL)
    await registrations.register(email="lee@example.com", name="Lee", password=PASSWORD)


async def test_a_connection_reset_under_the_first_start_is_read_again(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first call after the client sat idle a minute met a connection the server had closed:
    the SDK answered CANCELLED "operation was canceled", and ``register`` raised it raw (seen in
    CI). The search-attribute check is a read: it is made once more."""
    real = visibility.namespace_trouble
    calls = 0

    async def reset_once(client: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RPCError("operation was canceled", RPCStatusCode.CANCELLED, b"")
        return await real(client)

    monkeypatch.setattr(visibility, "namespace_trouble", reset_once)
    fresh = RegistrationClient(stack.client, stack.settings)
    receipt = await register(
        Stack(stack.client, stack.settings, stack.providers, fresh), "ida@example.com"
    )
    assert calls == 2 and receipt.registration_id
    await wait_for_state(stack, "ida@example.com", RegistrationState.PENDING)
    await stack.registrations.cancel("ida@example.com", "test over")
