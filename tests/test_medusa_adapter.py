"""The Medusa adapter against the loopback simulator, over real HTTP: every operation, the
existing-identity rule, error mapping, token expiry and retry recovery."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.testing import ActivityEnvironment

from activities.errors import (
    AccountExists,
    ConfigurationError,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
)
from activities.providers.medusa import (
    ADMIN_CUSTOMERS,
    CUSTOMER_MARK,
    REGISTRATION_MARK,
    STORE_CUSTOMERS,
    MedusaClient,
    MedusaSettings,
    jwt_claims,
    split_name,
)
from activities.providers.settings import load_vendor_settings
from activities.roles import NewCustomer, NewPrincipal
from tests.simulators.medusa import MedusaSimulator, running

PASSWORD = "correct horse battery staple 42"
EMAIL = "alice@example.com"


@pytest.fixture
async def sim() -> AsyncIterator[MedusaSimulator]:
    async with running(MedusaSimulator(seed=1)) as simulator:
        yield simulator


def settings_for(sim: MedusaSimulator, **overrides: Any) -> MedusaSettings:
    values: dict[str, Any] = {
        "base_url": sim.base_url,
        "publishable_key": sim.publishable_key,
        "secret_api_key": SecretStr(sim.secret_api_key),
        **overrides,
    }
    return MedusaSettings(_env_file=None, **values)


@pytest.fixture
async def medusa(sim: MedusaSimulator) -> AsyncIterator[MedusaClient]:
    client = MedusaClient(settings_for(sim))
    try:
        yield client
    finally:
        await client.aclose()


def new_principal(email: str = EMAIL, name: str = "Alice Andersson") -> NewPrincipal:
    customer = NewCustomer(
        id=str(uuid.uuid4()),
        email=email,
        email_canonical=email,
        name=name,
        profile={"newsletter": "yes"},
    )
    return NewPrincipal(
        id=str(uuid.uuid4()), email=email, email_canonical=email, name=name, customer=customer
    )


def new_customer(email: str = EMAIL) -> NewCustomer:
    return NewCustomer(id=str(uuid.uuid4()), email=email, email_canonical=email, name="Bo Ek")


def undo_in_registration(medusa: MedusaClient, principal_id: str, email: str = EMAIL) -> Any:
    """``undo_principal`` run as the registration's activity (its workflow ID names the email)."""
    info = dataclasses.replace(
        ActivityEnvironment.default_info(), workflow_id=f"registration-{email}"
    )
    env = ActivityEnvironment()
    env.info = info
    return env.run(medusa.identity.undo_principal, principal_id)


# Identity: the happy path ----------------------------------------------------------------------


async def test_create_principal_registers_login_and_creates_bound_marked_customer(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    assert await medusa.identity.find_principal(EMAIL) is None
    new = new_principal()
    principal = await medusa.identity.create_principal(new, PASSWORD)

    (customer,) = sim.live_customers(EMAIL)
    assert customer["has_account"] is True
    assert (customer["first_name"], customer["last_name"]) == ("Alice", "Andersson")
    assert customer["metadata"] == {"newsletter": "yes", REGISTRATION_MARK: new.id}
    identity = sim.identities[EMAIL]
    assert identity["app_metadata"]["customer_id"] == customer["id"]
    assert principal.id == identity["id"]
    assert principal.active and principal.customer_id == customer["id"]
    assert principal.customer_number == customer["id"]
    # The store create carried the key and the token; the admin key went as HTTP Basic.
    (store,) = [r for r in sim.requests if r.path == STORE_CUSTOMERS]
    assert store.headers["x-publishable-api-key"] == sim.publishable_key
    assert store.headers["authorization"].startswith("Bearer ")
    assert "metadata" not in store.body
    admin = [r for r in sim.requests if r.path.startswith(ADMIN_CUSTOMERS)]
    assert admin and all(r.headers["authorization"].startswith("Basic ") for r in admin)

    found = await medusa.identity.find_principal(EMAIL)
    assert found is not None and found.active and found.customer_id == customer["id"]
    got = await medusa.identity.get_principal(customer["id"])
    assert got is not None and got.customer_id == customer["id"]
    assert await medusa.identity.get_principal(new.id) is None


async def test_retried_step_returns_its_own_customer_and_creates_no_second(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    new = new_principal()
    first = await medusa.identity.create_principal(new, PASSWORD)
    again = await medusa.identity.create_principal(new, PASSWORD)
    assert again.customer_id == first.customer_id
    assert len(sim.live_customers(EMAIL)) == 1


# The existing-identity rule --------------------------------------------------------------------


async def test_admin_user_with_the_same_password_becomes_a_customer(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    admin = sim.add_admin_user(EMAIL, PASSWORD)
    principal = await medusa.identity.create_principal(new_principal(), PASSWORD)
    (customer,) = sim.live_customers(EMAIL)
    assert principal.id == admin["id"]
    assert admin["app_metadata"] == {"user_id": admin["app_metadata"]["user_id"]} | {
        "customer_id": customer["id"]
    }
    assert sim.identities[EMAIL]["password"] == admin["password"]  # the login is unchanged


async def test_login_with_another_password_is_not_taken_over(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    admin = sim.add_admin_user(EMAIL, "another password entirely")
    with pytest.raises(AccountExists):
        await medusa.identity.create_principal(new_principal(), PASSWORD)
    assert sim.live_customers(EMAIL) == []
    assert "customer_id" not in admin["app_metadata"]


async def test_login_that_has_a_customer_is_account_exists(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    existing = sim.add_customer(EMAIL, has_account=True, password=PASSWORD)
    found = await medusa.identity.find_principal(EMAIL)
    assert found is not None and found.customer_id == existing["id"]
    with pytest.raises(AccountExists):
        await medusa.identity.create_principal(new_principal(), PASSWORD)
    assert sim.live_customers(EMAIL) == [existing]


async def test_imported_guest_gets_an_account_customer_beside_it(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    guest = sim.add_customer(EMAIL, first_name="Imported")
    assert await medusa.identity.find_principal(EMAIL) is None
    principal = await medusa.identity.create_principal(new_principal(), PASSWORD)
    assert not principal.linked_existing_customer
    accounts = [c for c in sim.live_customers(EMAIL) if c["has_account"]]
    assert [c["id"] for c in accounts] == [principal.customer_id]
    assert sim.customers[guest["id"]]["deleted_at"] is None
    assert sim.customers[guest["id"]]["first_name"] == "Imported"


# Retries and tokens ----------------------------------------------------------------------------


async def test_lost_answer_of_the_store_create_is_recovered_after_422(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    sim.set_faults(path_prefix=STORE_CUSTOMERS, lost_answer_rate=1.0, limit=1)
    principal = await medusa.identity.create_principal(new_principal(), PASSWORD)
    statuses = [r.status for r in sim.requests if r.path == STORE_CUSTOMERS]
    assert statuses == [200, 422]
    (customer,) = sim.live_customers(EMAIL)
    assert principal.customer_id == customer["id"]
    assert customer["metadata"][REGISTRATION_MARK]


async def test_lost_answer_of_register_is_recovered_by_logging_in(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    sim.set_faults(path_prefix="/auth/customer/emailpass/register", lost_answer_rate=1.0, limit=1)
    new = new_principal()
    with pytest.raises(ProviderUnavailable):
        await medusa.identity.create_principal(new, PASSWORD)  # the attempt fails retryably
    principal = await medusa.identity.create_principal(new, PASSWORD)  # Temporal's retry
    (customer,) = sim.live_customers(EMAIL)
    assert principal.customer_id == customer["id"]


async def test_expired_token_is_renewed_by_logging_in(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    sim.token_lifetime_seconds = 60
    sim.set_faults(path_prefix=STORE_CUSTOMERS, latency_seconds=0.0)
    original = sim._jwt

    def expired_once(identity: dict[str, Any]) -> str:
        token = original(identity)
        sim._jwt = original  # type: ignore[method-assign]
        sim.expire_tokens()
        return token

    sim._jwt = expired_once  # type: ignore[method-assign]
    principal = await medusa.identity.create_principal(new_principal(), PASSWORD)
    statuses = [r.status for r in sim.requests if r.path == STORE_CUSTOMERS]
    assert statuses == [401, 200]
    assert sim.count("POST", "/auth/customer/emailpass") == 1
    assert principal.customer_id == sim.live_customers(EMAIL)[0]["id"]


async def test_failure_after_the_customer_exists_deletes_it_in_the_step(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    sim.set_faults(
        path_prefix=f"{ADMIN_CUSTOMERS}/", method="POST", error_rate=1.0, error_status=400
    )
    with pytest.raises(InvalidRequest):
        await medusa.identity.create_principal(new_principal(), PASSWORD)
    assert sim.live_customers(EMAIL) == []
    assert sim.identities[EMAIL]["app_metadata"]["customer_id"] is None  # login left, unbound


# Undo -----------------------------------------------------------------------------------------


async def test_undo_deletes_only_the_customer_this_registration_created(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    new = new_principal()
    await medusa.identity.create_principal(new, PASSWORD)
    other = str(uuid.uuid4())
    assert await undo_in_registration(medusa, other) is False
    assert len(sim.live_customers(EMAIL)) == 1
    assert await undo_in_registration(medusa, new.id) is True
    assert sim.live_customers(EMAIL) == []
    assert EMAIL in sim.identities  # the login stays, unbound
    assert sim.identities[EMAIL]["app_metadata"]["customer_id"] is None
    assert await undo_in_registration(medusa, new.id) is False  # idempotent
    # Outside a registration (no email to look under) nothing is touched.
    assert await medusa.identity.undo_principal(new.id) is False


async def test_after_an_undo_the_same_password_registers_again(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    first = new_principal()
    await medusa.identity.create_principal(first, PASSWORD)
    await undo_in_registration(medusa, first.id)
    second = new_principal()
    later = await medusa.identity.create_principal(second, PASSWORD)
    (customer,) = sim.live_customers(EMAIL)
    assert later.customer_id == customer["id"]
    assert await undo_in_registration(medusa, second.id) is True
    with pytest.raises(AccountExists):  # another password meets the unbound login: not taken
        await medusa.identity.create_principal(new_principal(), "a different password 99")
    assert sim.live_customers(EMAIL) == []


# Customers role -------------------------------------------------------------------------------


async def test_customers_role_creates_links_and_undoes(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    new = new_customer()
    link = await medusa.customers.link_or_create_customer(new)
    assert link.created
    (customer,) = sim.live_customers(EMAIL)
    assert customer["has_account"] is False and customer["metadata"][CUSTOMER_MARK] == new.id
    again = await medusa.customers.link_or_create_customer(new)  # a retried step
    assert again.created and again.customer.id == link.customer.id
    other = await medusa.customers.link_or_create_customer(new_customer())
    assert not other.created and other.customer.id == link.customer.id
    assert await medusa.customers.undo_customer(new.id) is False  # our UUID names nothing
    assert await medusa.customers.undo_customer(link.customer.id) is True
    assert await medusa.customers.undo_customer(link.customer.id) is False
    assert sim.live_customers(EMAIL) == []


async def test_customers_role_prefers_the_account_customer(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    sim.add_customer(EMAIL)
    account = sim.add_customer(EMAIL, has_account=True, password=PASSWORD)
    link = await medusa.customers.link_or_create_customer(new_customer())
    assert not link.created and link.customer.id == account["id"]


async def test_customers_role_lost_create_answer_is_found_by_its_mark(
    medusa: MedusaClient, sim: MedusaSimulator
) -> None:
    sim.set_faults(path_prefix=ADMIN_CUSTOMERS, method="POST", lost_answer_rate=1.0, limit=1)
    new = new_customer()
    with pytest.raises(ProviderUnavailable):
        await medusa.customers.link_or_create_customer(new)
    link = await medusa.customers.link_or_create_customer(new)
    assert link.created and len(sim.live_customers(EMAIL)) == 1


# Errors and settings --------------------------------------------------------------------------


async def test_error_mapping(medusa: MedusaClient, sim: MedusaSimulator) -> None:
    sim.set_faults(path_prefix=ADMIN_CUSTOMERS, error_rate=1.0, error_status=503)
    with pytest.raises(ProviderUnavailable):
        await medusa.identity.find_principal(EMAIL)
    sim.set_faults(error_status=404)
    with pytest.raises(NotFound):
        await medusa.identity.find_principal(EMAIL)
    sim.set_faults(error_status=409)
    with pytest.raises(Exception) as conflict:
        await medusa.identity.find_principal(EMAIL)
    assert type(conflict.value).__name__ == "Conflict"
    sim.set_faults(error_status=422)
    with pytest.raises(InvalidRequest):
        await medusa.identity.find_principal(EMAIL)
    sim.reset_faults()


async def test_wrong_secret_key_is_retryable_and_never_shown(sim: MedusaSimulator) -> None:
    client = MedusaClient(settings_for(sim, secret_api_key=SecretStr("sk_wrong_secret")))
    try:
        with pytest.raises(ProviderUnavailable) as failure:
            await client.identity.find_principal(EMAIL)
    finally:
        await client.aclose()
    assert "SECRET_API_KEY" in failure.value.message
    assert "sk_wrong_secret" not in failure.value.message


async def test_password_never_reaches_an_error(medusa: MedusaClient, sim: MedusaSimulator) -> None:
    sim.set_faults(path_prefix="/auth", error_rate=1.0, error_status=400)
    with pytest.raises(InvalidRequest) as failure:
        await medusa.identity.create_principal(new_principal(), PASSWORD)
    assert PASSWORD not in str(failure.value)


def test_missing_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("BASE_URL", "PUBLISHABLE_KEY", "SECRET_API_KEY"):
        monkeypatch.delenv(f"REGISTRATION_MEDUSA_{name}", raising=False)
    with pytest.raises(ConfigurationError, match="REGISTRATION_MEDUSA_BASE_URL"):
        MedusaClient(load_vendor_settings(MedusaSettings))
    monkeypatch.setenv("REGISTRATION_MEDUSA_BASE_URL", "http://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="REGISTRATION_MEDUSA_SECRET_API_KEY"):
        MedusaClient(load_vendor_settings(MedusaSettings))
    monkeypatch.setenv("REGISTRATION_MEDUSA_SECRET_API_KEY", "sk_x")
    client = MedusaClient(load_vendor_settings(MedusaSettings))
    with pytest.raises(ConfigurationError, match="REGISTRATION_MEDUSA_PUBLISHABLE_KEY"):
        _ = client.publishable_key
    monkeypatch.setenv("REGISTRATION_MEDUSA_SECRT_API_KEY", "typo")
    with pytest.raises(ConfigurationError, match="REGISTRATION_MEDUSA_SECRT_API_KEY"):
        load_vendor_settings(MedusaSettings)


def test_helpers() -> None:
    assert split_name("Alice Maria Andersson") == ("Alice Maria", "Andersson")
    assert split_name("Cher") == ("Cher", None)
    with pytest.raises(InvalidRequest):
        jwt_claims("not-a-token")
