"""What the client raises: one base for all of its own exceptions, ``NotPending`` for a state that
does not allow the action, and the fallback message for a namespace without the attributes."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    RemoveSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.exceptions import TemporalError
from temporalio.testing import WorkflowEnvironment

from common.converter import data_converter
from common.keys import KeyConfigError
from common.settings import InvalidSettings, Settings
from starter import client as client_module
from starter.client import (
    InvalidInput,
    NotPending,
    NoWorkerAnswered,
    RegistrationClient,
    RegistrationError,
    SealKeyMismatch,
    UnknownRegistration,
)
from tests.helpers import PASSWORD, register, result_of, wait_for_state
from tests.stack import Stack, bare_namespace, run_create_commands
from tests.test_bad_input import server_of
from workflows import visibility
from workflows.models import RegistrationState

OLD_BASES: dict[type[Exception], type[Exception]] = {
    InvalidInput: ValueError,
    UnknownRegistration: LookupError,
    NoWorkerAnswered: TemporalError,
    SealKeyMismatch: KeyConfigError,
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
    assert defined == {RegistrationError, NotPending, *OLD_BASES}  # a new one is listed here too
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
    await wait_for_state(stack, cancelled, RegistrationState.CANCELLED)
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
    # Terminated, its status attribute still says pending: Temporal's status of the run is told.
    with pytest.raises(NotPending) as cancelling:
        await registrations.cancel(terminated)
    assert cancelling.value.state == "terminated"


async def test_a_start_refused_for_missing_search_attributes_names_both_ways_to_create_them(
    dev_env: WorkflowEnvironment, settings: Settings
) -> None:
    """The start's own error, ``_missing_search_attributes``: the client checked the namespace
    before its first start, and the attributes were removed after that (or a key that may not
    list them skipped the check, as on Temporal Cloud). The message names the Temporal CLI
    commands, which work pasted as they are, and the ``tcld`` command of Temporal Cloud."""
    namespace = await bare_namespace(dev_env)
    await dev_env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in visibility.ALL
            },
        )
    )
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
