"""End to end with Medusa: dev server + worker + the loopback Medusa simulator over real HTTP.

Identity and customers on Medusa (mail in the outbox: Medusa has no mail API), and the customers
role alone beside the local identity. Assertions read the simulator's state.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment

from activities.providers.medusa import ADMIN_CUSTOMERS, REGISTRATION_MARK, STORE_CUSTOMERS
from common.settings import Settings
from tests.helpers import (
    PASSWORD,
    categories,
    identity,
    register,
    result_of,
    wait_for_state,
    wrong_code,
)
from tests.simulators.loopback import point_env
from tests.simulators.medusa import MedusaSimulator, running
from tests.stack import Stack, make_settings, running_stack
from workflows.models import ActivationOutcome, RegistrationState

ACTIVATION = "customer_activation"
WELCOME = "customer_welcome"
ALREADY = "customer_already_registered"


@pytest.fixture
async def sim() -> AsyncIterator[MedusaSimulator]:
    async with running(MedusaSimulator(seed=1)) as simulator:
        yield simulator


@pytest.fixture
def medusa_env(
    sim: MedusaSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> MedusaSimulator:
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_MEDUSA_", sim.env())
    return sim


def medusa_settings(tmp_path: Path, **overrides: Any) -> Settings:
    roles = {"identity_provider": "medusa", "customers_provider": "medusa"}
    return make_settings(tmp_path / ".data", **{**roles, "mail_provider": "outbox", **overrides})


@pytest.fixture
async def mstack(
    dev_env: WorkflowEnvironment, medusa_env: MedusaSimulator, tmp_path: Path
) -> AsyncIterator[Stack]:
    async for running_ in running_stack(dev_env.client, medusa_settings(tmp_path)):
        yield running_


def new_email(label: str) -> str:
    """Unique on the session's dev server."""
    return f"{label}.{uuid.uuid4().hex[:8]}@example.com"


async def pending(stack: Stack, email: str, name: str = "Alice Andersson") -> str:
    receipt = await register(stack, email, name)
    await wait_for_state(stack, email, RegistrationState.PENDING)
    return receipt.registration_id


def writes(sim: MedusaSimulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in sim.requests if r.method != "GET"]


async def test_happy_path(mstack: Stack, sim: MedusaSimulator) -> None:
    email = new_email("alice")
    registration_id = await pending(mstack, email)
    assert writes(sim) == []  # nothing at Medusa before the email is proven
    assert sim.identities == {} and sim.customers == {}

    reply = await mstack.registrations.submit_code(email, mstack.code_for(email))
    assert reply.outcome is ActivationOutcome.ACTIVATED

    (customer,) = sim.live_customers(email)
    login = sim.identities[email]
    assert customer["has_account"] and login["app_metadata"]["customer_id"] == customer["id"]
    assert (customer["first_name"], customer["last_name"]) == ("Alice", "Andersson")
    assert customer["metadata"][REGISTRATION_MARK]
    result = await result_of(mstack, registration_id)
    assert result.state is RegistrationState.ACTIVE
    assert result.customer_id == customer["id"] and result.principal_id == login["id"]
    assert not result.linked_existing_customer
    assert categories(mstack, email) == [ACTIVATION, WELCOME]
    assert all(PASSWORD not in repr(r.body) for r in sim.requests if r.path == STORE_CUSTOMERS)


async def test_wrong_code_changes_nothing_at_medusa(mstack: Stack, sim: MedusaSimulator) -> None:
    email = new_email("wrong")
    await pending(mstack, email)
    code = mstack.code_for(email)
    reply = await mstack.registrations.submit_code(email, wrong_code(code))
    assert reply.outcome is ActivationOutcome.INVALID_CODE
    assert writes(sim) == [] and sim.identities == {}
    reply = await mstack.registrations.submit_code(email, code)
    assert reply.outcome is ActivationOutcome.ACTIVATED
    assert len(sim.live_customers(email)) == 1


async def test_cancel_while_pending_leaves_nothing_at_medusa(
    mstack: Stack, sim: MedusaSimulator
) -> None:
    email = new_email("cancel")
    registration_id = await pending(mstack, email)
    await mstack.registrations.cancel(email, reason="customer asked")
    with pytest.raises(WorkflowFailureError) as failure:
        await result_of(mstack, registration_id)
    assert isinstance(failure.value.cause, CancelledError)
    assert writes(sim) == [] and sim.identities == {} and sim.customers == {}


async def test_failure_after_the_customer_was_created_is_compensated(
    mstack: Stack, sim: MedusaSimulator
) -> None:
    email = new_email("halfway")
    registration_id = await pending(mstack, email)
    # The mark (the admin update right after the store create) is refused for good.
    sim.set_faults(
        path_prefix=f"{ADMIN_CUSTOMERS}/", method="POST", error_rate=1.0, error_status=400
    )
    reply = await mstack.registrations.submit_code(email, mstack.code_for(email))
    assert reply.outcome is ActivationOutcome.FAILED
    with pytest.raises(WorkflowFailureError):
        await result_of(mstack, registration_id)
    created = [c for c in sim.customers.values() if c["email"] == email]
    assert len(created) == 1 and created[0]["deleted_at"] is not None  # soft-deleted
    assert sim.live_customers(email) == []
    assert sim.identities[email]["app_metadata"]["customer_id"] is None  # the login, unbound
    assert (await mstack.registrations.status(email)).state is RegistrationState.FAILED


async def test_email_with_a_customer_account_is_already_registered(
    mstack: Stack, sim: MedusaSimulator
) -> None:
    email = new_email("owner")
    existing = sim.add_customer(email, has_account=True, password="the owner's own password")
    await register(mstack, email)
    await wait_for_state(mstack, email, RegistrationState.ALREADY_REGISTERED)
    assert categories(mstack, email) == [ALREADY]
    assert writes(sim) == [] and sim.live_customers(email) == [existing]
    await mstack.registrations.cancel(email, "test over")


async def test_admin_user_with_the_same_password_becomes_a_customer(
    mstack: Stack, sim: MedusaSimulator
) -> None:
    email = new_email("admin")
    admin = sim.add_admin_user(email, PASSWORD)
    registration_id = await pending(mstack, email)
    reply = await mstack.registrations.submit_code(email, mstack.code_for(email))
    assert reply.outcome is ActivationOutcome.ACTIVATED
    (customer,) = sim.live_customers(email)
    assert admin["app_metadata"]["customer_id"] == customer["id"]
    assert admin["app_metadata"]["user_id"]  # still an admin user: one login, two actors
    result = await result_of(mstack, registration_id)
    assert result.state is RegistrationState.ACTIVE and result.principal_id == admin["id"]


async def test_admin_user_with_another_password_is_not_taken_over(
    mstack: Stack, sim: MedusaSimulator
) -> None:
    email = new_email("admin-other")
    admin = sim.add_admin_user(email, "the admin's own password 1")
    registration_id = await pending(mstack, email)
    reply = await mstack.registrations.submit_code(email, mstack.code_for(email))
    assert reply.outcome is ActivationOutcome.ALREADY_REGISTERED
    result = await result_of(mstack, registration_id)
    assert result.state is RegistrationState.ALREADY_REGISTERED
    assert "AccountExists" in (result.reason or "")
    assert categories(mstack, email) == [ACTIVATION, ALREADY]  # the owner is told
    assert sim.live_customers(email) == [] and "customer_id" not in admin["app_metadata"]


async def test_imported_guest_customer(mstack: Stack, sim: MedusaSimulator) -> None:
    email = new_email("guest")
    guest = sim.add_customer(email, first_name="Imported")
    registration_id = await pending(mstack, email)
    reply = await mstack.registrations.submit_code(email, mstack.code_for(email))
    assert reply.outcome is ActivationOutcome.ACTIVATED
    accounts = [c for c in sim.live_customers(email) if c["has_account"]]
    assert len(accounts) == 1  # exactly one customer with an account
    assert sim.customers[guest["id"]] == guest and guest["deleted_at"] is None
    status = await mstack.registrations.status(email)
    assert not status.linked_existing_customer and status.customer_id == accounts[0]["id"]
    assert (await result_of(mstack, registration_id)).state is RegistrationState.ACTIVE


async def test_local_identity_with_medusa_customers(
    dev_env: WorkflowEnvironment, medusa_env: MedusaSimulator, tmp_path: Path
) -> None:
    sim = medusa_env
    settings = medusa_settings(tmp_path, identity_provider="local")
    email = new_email("hybrid")
    async for stack in running_stack(dev_env.client, settings):
        registration_id = await pending(stack, email, "Heidi Hybrid")
        reply = await stack.registrations.submit_code(email, stack.code_for(email))
        assert reply.outcome is ActivationOutcome.ACTIVATED
        (customer,) = sim.live_customers(email)
        assert customer["has_account"] is False  # made through the admin API
        principal = await identity(stack).find_principal(email)
        assert principal is not None and principal.active
        assert principal.customer_id == customer["id"]
        result = await result_of(stack, registration_id)
        assert result.customer_id == customer["id"]
        assert sim.identities == {}  # no Medusa login
