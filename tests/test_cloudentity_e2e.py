"""End to end with Cloudentity as the identity provider: dev server + worker + the loopback
Cloudentity simulator, its codes mailed by the outbox.

The compositions are parametrized (``COMPOSITIONS``): identity=cloudentity with customers=local,
and with customers=norce (a Norce simulator beside it, named by ``REGISTRATION_NORCE_*``).
Assertions read the simulators' state, not our own view.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.providers.cloudentity import METADATA_CUSTOMER_ID, METADATA_CUSTOMER_NUMBER
from activities.providers.local import LocalCustomers
from activities.providers.norce import NorceCustomers
from tests.helpers import categories, register, result_of, wait_for_state
from tests.outbox import messages_to
from tests.simulators.cloudentity import POOL, TENANT, CloudentitySimulator, running
from tests.simulators.loopback import point_env
from tests.simulators.norce import NorceSimulator
from tests.simulators.norce import running as running_norce
from tests.stack import Stack, make_settings, running_stack
from workflows.models import ActivationOutcome, RegistrationState, ResendOutcome

CODE_LENGTH = 8
CODE = re.compile(rf"[0-9]{{{CODE_LENGTH}}}")
API = f"/api/identity/{TENANT}/system/pools/{POOL}"


# The stack builder ----------------------------------------------------------------------------


@dataclass
class CustomersSetup:
    """One customers provider beside Cloudentity: its name, what its environment needs (a
    context that sets it up, e.g. a simulator and its ``REGISTRATION_<VENDOR>_*``), and how a
    test reads the customer of an email there (``None``: none)."""

    name: str
    environment: Callable[[pytest.MonkeyPatch], AbstractAsyncContextManager[Any]]
    customer_of: Callable[[Stack, str], Awaitable[dict[str, str] | None]]


@asynccontextmanager
async def _nothing(_: pytest.MonkeyPatch) -> AsyncIterator[None]:
    yield None


async def _local_customer(stack: Stack, email: str) -> dict[str, str] | None:
    customers = stack.providers.customers
    assert isinstance(customers, LocalCustomers)
    found = await customers.find_customer(email)
    return None if found is None else {"id": found.id, "number": found.number}


LOCAL = CustomersSetup("local", _nothing, _local_customer)


@asynccontextmanager
async def _norce(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[NorceSimulator]:
    """A Norce simulator for the customers, named by ``REGISTRATION_NORCE_*``."""
    async with running_norce(NorceSimulator(seed=5)) as sim:
        point_env(monkeypatch, "REGISTRATION_NORCE_", sim.env())
        yield sim


async def _norce_customer(stack: Stack, email: str) -> dict[str, str] | None:
    """The email's customer as Norce's lookup shows it (inactivated ones are hidden)."""
    customers = stack.providers.customers
    assert isinstance(customers, NorceCustomers)
    found = await customers.find_customer(email)
    return None if found is None else {"id": found.id, "number": found.number}


NORCE = CustomersSetup("norce", _norce, _norce_customer)
COMPOSITIONS = [
    pytest.param(LOCAL, id="customers=local"),
    pytest.param(NORCE, id="customers=norce"),  # seed 003: "look up the correct customer"
]


def cloudentity_settings(tmp_path: Path, customers: str, **overrides: Any) -> Any:
    return make_settings(
        tmp_path / ".data",
        identity_provider="cloudentity",
        customers_provider=customers,
        mail_provider="outbox",
        code_pattern=f"[0-9]{{{CODE_LENGTH}}}",
        **overrides,
    )


def point_at(sim: CloudentitySimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """REGISTRATION_CLOUDENTITY_* name this test's simulator; nothing of the developer's leaks."""
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_CLOUDENTITY_", sim.env())


@dataclass
class Composition:
    stack: Stack
    sim: CloudentitySimulator
    customers: CustomersSetup


async def build(
    env: WorkflowEnvironment,
    customers: CustomersSetup,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    **settings: Any,
) -> AsyncIterator[Composition]:
    """The parametrizable stack: Cloudentity (simulated) for identity, ``customers`` beside it,
    the outbox for mail, ``settings`` changed."""
    async with running(CloudentitySimulator(code_length=CODE_LENGTH)) as sim:
        point_at(sim, monkeypatch, tmp_path)
        async with customers.environment(monkeypatch):
            config = cloudentity_settings(tmp_path, customers.name, **settings)
            async for stack in running_stack(env.client, config):
                yield Composition(stack, sim, customers)


@pytest.fixture(params=COMPOSITIONS)
def customers_setup(request: pytest.FixtureRequest) -> CustomersSetup:
    setup: CustomersSetup = request.param
    return setup


@pytest.fixture
async def c(
    dev_env: WorkflowEnvironment,
    customers_setup: CustomersSetup,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> AsyncIterator[Composition]:
    async for built in build(
        dev_env, customers_setup, monkeypatch, tmp_path, resend_interval=timedelta(0)
    ):
        yield built


# Helpers --------------------------------------------------------------------------------------


def mailed_code(stack: Stack, email: str) -> str:
    """The Cloudentity code in the newest mail to ``email``."""
    message = messages_to(stack.settings.outbox_path, email)[-1]
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    codes = [line for line in body.get_content().splitlines() if CODE.fullmatch(line.strip())]
    assert len(codes) == 1, body.get_content()
    return str(codes[0]).strip()


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**CODE_LENGTH:0{CODE_LENGTH}d}"


def the_user(sim: CloudentitySimulator, email: str) -> dict[str, Any]:
    user = sim.user_by_email(email)
    assert user is not None, f"no user for {email} at the simulator"
    return user


def activations(sim: CloudentitySimulator, user_id: str) -> list[int]:
    return [
        r.status
        for r in sim.requests
        if r.method == "POST" and r.path == f"{API}/users/{user_id}/activate"
    ]


async def pending(c: Composition, email: str) -> tuple[str, str]:
    receipt = await register(c.stack, email)
    await wait_for_state(c.stack, email, RegistrationState.PENDING)
    return receipt.registration_id, the_user(c.sim, email)["id"]


async def failed_for_good(c: Composition, registration_id: str) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(c.stack, registration_id)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    return cause


# Tests ----------------------------------------------------------------------------------------


async def test_happy_path(c: Composition) -> None:
    email = "alice@example.com"
    registration_id, user_id = await pending(c, email)
    user = c.sim.users[user_id]
    assert user["status"] == "new" and user["verifiable_addresses"][0]["verified"] is False
    code = mailed_code(c.stack, email)
    assert c.sim.codes[user_id].value == code  # Cloudentity's code, as mailed
    assert c.sim.passwords[user_id] == "correct horse battery staple"

    reply = await c.stack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED
    assert activations(c.sim, user_id) == [201]
    user = c.sim.users[user_id]
    assert user["status"] == "active" and user["verifiable_addresses"][0]["verified"] is True
    customer = await c.customers.customer_of(c.stack, email)
    assert customer is not None
    assert user["metadata"][METADATA_CUSTOMER_ID] == customer["id"]
    assert user["metadata"][METADATA_CUSTOMER_NUMBER] == customer["number"]
    (put,) = [r for r in c.sim.requests if r.method == "PUT"]
    assert put.status == 200 and put.headers["if-match"]
    result = await result_of(c.stack, registration_id)
    assert result.state is RegistrationState.ACTIVE and result.customer_id == customer["id"]
    assert categories(c.stack, email) == ["customer_activation", "customer_welcome"]


async def test_a_wrong_code_never_reaches_cloudentity(c: Composition) -> None:
    email = "bob@example.com"
    _, user_id = await pending(c, email)
    code = mailed_code(c.stack, email)
    reply = await c.stack.registrations.submit_code(email, wrong(code))
    assert reply.outcome is ActivationOutcome.INVALID_CODE
    assert activations(c.sim, user_id) == []
    assert (await c.stack.registrations.submit_code(email, code)).outcome is (
        ActivationOutcome.ACTIVATED
    )


async def test_our_limit_comes_first(c: Composition) -> None:
    email = f"carol@{c.customers.name}.cloudentity.example.com"  # a locked one holds it
    _registration_id, user_id = await pending(c, email)
    code = mailed_code(c.stack, email)
    outcomes = [
        (await c.stack.registrations.submit_code(email, wrong(code))).outcome
        for _ in range(c.stack.settings.max_attempts_per_code)
    ]
    assert outcomes[-1] is ActivationOutcome.TOO_MANY_ATTEMPTS
    assert activations(c.sim, user_id) == []  # Cloudentity counted nothing
    await c.stack.registrations.cancel(email, "test over")  # releases the email


async def test_cloudentitys_brute_force_lock_ends_the_registration_locked(
    c: Composition,
) -> None:
    """Its limit reached elsewhere (its own pages, another client): the right code meets the
    429, the registration ends locked and is undone."""
    email = f"dan@{c.customers.name}.cloudentity.example.com"  # a locked one holds it
    registration_id, user_id = await pending(c, email)
    code = mailed_code(c.stack, email)
    c.sim.wrong[user_id] = [c.sim.clock()] * c.sim.max_wrong_codes

    reply = await c.stack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.TOO_MANY_ATTEMPTS
    await wait_for_state(c.stack, email, RegistrationState.LOCKED)
    for _ in range(300):  # the undos run after the outcome is decided
        if user_id not in c.sim.users:
            break
        await asyncio.sleep(0.1)
    assert activations(c.sim, user_id) == [429]  # once: no retry storm
    assert await c.customers.customer_of(c.stack, email) is None
    await c.stack.registrations.cancel(email, "test over")
    assert (await result_of(c.stack, registration_id)).state is RegistrationState.LOCKED


async def test_a_resend_replaces_the_code_at_cloudentity(c: Composition) -> None:
    email = "erin@example.com"
    _, user_id = await pending(c, email)
    old = mailed_code(c.stack, email)
    assert (await c.stack.registrations.resend(email)).outcome is ResendOutcome.SENT
    new = mailed_code(c.stack, email)
    assert new != old and c.sim.codes[user_id].value == new
    assert [u for u, _ in c.sim.issued_codes] == [user_id, user_id]

    stale = await c.stack.registrations.submit_code(email, old)
    assert stale.outcome is ActivationOutcome.INVALID_CODE
    identity = c.stack.providers.identity
    assert hasattr(identity, "confirm_code")
    assert not await identity.confirm_code(user_id, old)  # Cloudentity refuses it too
    reply = await c.stack.registrations.submit_code(email, new)
    assert reply.outcome is ActivationOutcome.ACTIVATED


async def test_cancel_while_pending_deletes_the_user(c: Composition) -> None:
    email = "fay@example.com"
    registration_id, _user_id = await pending(c, email)
    await c.stack.registrations.cancel(email, reason="customer asked")
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(c.stack, registration_id)
    assert isinstance(failure.value.cause, CancelledError)
    assert c.sim.users == {}
    deletes = [r.status for r in c.sim.requests if r.method == "DELETE"]
    assert deletes == [204]


async def test_a_failure_after_the_customer_was_created_is_compensated(c: Composition) -> None:
    """The pool's metadata schema refuses the link (a setup mistake, 422): the customer the
    registration created is undone, the user deleted."""
    email = "gus@example.com"
    registration_id, user_id = await pending(c, email)
    c.sim.set_faults(reject_metadata=True)
    reply = await c.stack.registrations.submit_code(email, mailed_code(c.stack, email))
    assert reply.outcome is ActivationOutcome.FAILED
    cause = await failed_for_good(c, registration_id)
    assert cause.type == "RegistrationFailed"
    assert [r.status for r in c.sim.requests if r.method == "PUT"] == [422]
    assert user_id not in c.sim.users
    assert await c.customers.customer_of(c.stack, email) is None


async def test_an_email_with_an_active_user_is_answered_as_registered(c: Composition) -> None:
    email = f"hal@{c.customers.name}.cloudentity.example.com"  # its run stays open a while
    existing = c.sim.add_user(email)
    await register(c.stack, email)
    await wait_for_state(c.stack, email, RegistrationState.ALREADY_REGISTERED)
    assert list(c.sim.users) == [existing["id"]]  # nothing created
    assert c.sim.issued_codes == []
    assert categories(c.stack, email) == ["customer_already_registered"]
    await c.stack.registrations.cancel(email, "test over")
