"""The Emporix adapter against the loopback simulator: every operation, the error mapping, token
expiry and refresh, the settings; and the simulator's own documented behaviour."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from activities.errors import (
    AccountExists,
    ConcurrentModification,
    ConfigurationError,
    InvalidRequest,
    NotFound,
    PasswordRejected,
    ProviderUnavailable,
)
from activities.providers import configured
from activities.providers.emporix import (
    MANAGE_SCOPE,
    MIXIN,
    READ_SCOPE,
    EmporixClient,
    EmporixSettings,
    query_literal,
    split_name,
)
from activities.providers.settings import load_vendor_settings
from activities.roles import NewCustomer, NewPrincipal
from tests.simulators.emporix import EmporixSimulator, running
from tests.simulators.loopback import point_env
from tests.stack import make_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def sim() -> AsyncIterator[EmporixSimulator]:
    async with running(EmporixSimulator(seed=1)) as simulator:
        yield simulator


def client_for(sim: EmporixSimulator, **changes: str) -> EmporixClient:
    values = {
        "base_url": sim.base_url,
        "tenant": sim.tenant,
        "storefront_client_id": sim.storefront_client_id,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        **changes,
    }
    return EmporixClient(EmporixSettings(_env_file=None, **values))  # type: ignore[arg-type]


@pytest.fixture
async def client(sim: EmporixSimulator) -> AsyncIterator[EmporixClient]:
    made = client_for(sim)
    yield made
    await made.aclose()


def new(principal_id: str = "p-1", email: str = "ann@example.com") -> NewPrincipal:
    customer = NewCustomer(
        id="c-1", email=email, email_canonical=email, name="Ann Lee", profile={"source": "web"}
    )
    return NewPrincipal(
        id=principal_id,
        email=email,
        email_canonical=email,
        name="Ann Lee",
        phone="+4912345",
        locale="de-DE",
        customer=customer,
    )


async def test_create_is_an_inactive_marked_signup_and_idempotent(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    created = await client.identity.create_principal(new(), PASSWORD)
    assert created.id == "p-1" and not created.active and created.replaceable
    (doc,) = sim.customers.values()
    assert created.customer_number == doc["customerNumber"] and created.version == "1"
    assert doc["active"] is False and doc["contactPhone"] == "+4912345"
    assert doc["preferredLanguage"] == "de_DE"
    assert doc["mixins"][MIXIN] == {"principalId": "p-1", "profile": {"source": "web"}}
    again = await client.identity.create_principal(new(), PASSWORD)
    assert again == created and sim.count("POST", "/customer/acme/signup") == 1
    assert await client.identity.get_principal("p-1") == created
    assert await client.identity.find_principal("ann@example.com") == created
    assert await client.identity.get_principal("nobody") is None
    assert await client.identity.find_principal("nobody@example.com") is None


async def test_an_account_not_ours_is_account_exists(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    sim.add_customer("office@example.com", account_email="ann@example.com")
    with pytest.raises(AccountExists) as raised:
        await client.identity.create_principal(new(), PASSWORD)
    assert "example.com" not in raised.value.message
    assert len(sim.customers) == 1


async def test_a_short_password_is_rejected_and_not_echoed(client: EmporixClient) -> None:
    with pytest.raises(PasswordRejected) as raised:
        await client.identity.create_principal(new(), "short")
    assert "short" not in raised.value.message.replace("Invalid", "")


async def test_find_prefers_an_active_account_and_says_whose_an_inactive_one_is(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    sim.add_customer("bob@example.com", active=False)
    found = await client.identity.find_principal("bob@example.com")
    assert found is not None and not found.active and not found.replaceable
    sim.add_customer("Carl@Example.com")
    found = await client.identity.find_principal("carl@example.com")
    assert found is not None and found.active


async def test_activation_is_guarded_by_the_version(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    created = await client.identity.create_principal(new(), PASSWORD)
    with pytest.raises(ConcurrentModification):
        await client.identity.activate_principal("p-1", None, None, "7")
    sim.set_faults(concurrent_patches=1)
    with pytest.raises(ConcurrentModification):
        await client.identity.activate_principal("p-1", None, None, created.version)
    current = await client.identity.get_principal("p-1")
    assert current is not None and not current.active
    active = await client.identity.activate_principal("p-1", None, None, current.version)
    assert active.active and active.customer_id == created.customer_id
    assert active.customer_number == created.customer_number
    # A repeat after a lost answer: already active, returned as is.
    assert (await client.identity.activate_principal("p-1", None, None, current.version)).active
    with pytest.raises(NotFound):
        await client.identity.activate_principal("gone", None, None, "1")
    with pytest.raises(InvalidRequest):
        await client.identity.activate_principal("p-1", "c", "n", "1")


async def test_undo_deletes_once(sim: EmporixSimulator, client: EmporixClient) -> None:
    await client.identity.create_principal(new(), PASSWORD)
    assert await client.identity.undo_principal("p-1") is True
    assert sim.customers == {} and len(sim.deleted) == 1
    assert await client.identity.undo_principal("p-1") is False


async def test_customers_role_deletes_only_marked_records(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    imported = sim.add_customer("old@example.com")
    assert await client.customers.undo_customer(imported["customerNumber"]) is False
    assert await client.customers.undo_customer("404404") is False
    created = await client.identity.create_principal(new(), PASSWORD)
    assert created.customer_number is not None
    assert await client.customers.undo_customer(created.customer_number) is True
    assert list(sim.customers) == [imported["customerNumber"]]
    customer = NewCustomer(id="c", email="x@example.com", email_canonical="x@example.com", name="X")
    with pytest.raises(InvalidRequest):
        await client.customers.link_or_create_customer(customer)


async def test_expired_tokens_are_fetched_anew(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    await client.identity.create_principal(new(), PASSWORD)
    assert sim.count("POST", "/oauth/token") == 1
    assert sim.count("GET", "/customerlogin/auth/anonymous/login") == 1
    sim.expire_tokens()
    await client.identity.create_principal(new("p-2", "two@example.com"), PASSWORD)
    assert sim.count("POST", "/oauth/token") == 2
    assert sim.count("GET", "/customerlogin/auth/anonymous/login") == 2
    expired = [r for r in sim.requests if r.status == 401]
    assert len(expired) == 2 and all(b"access_token_expired" in r.response_body for r in expired)


async def test_a_missing_scope_names_it(sim: EmporixSimulator) -> None:
    sim.client_scopes = frozenset({READ_SCOPE})
    client = client_for(sim)
    try:
        await client.identity.create_principal(new(), PASSWORD)
        with pytest.raises(ProviderUnavailable) as raised:
            await client.identity.activate_principal("p-1", None, None, "1")
        assert MANAGE_SCOPE in raised.value.message and "HTTP 403" in raised.value.message
    finally:
        await client.aclose()


async def test_a_wrong_secret_is_retryable_and_never_shown(sim: EmporixSimulator) -> None:
    client = client_for(sim, client_secret="wrong-secret-value")
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            await client.identity.find_principal("ann@example.com")
        message = raised.value.message
        assert "HTTP 401" in message and "InvalidClientIdentifier" in message
        assert "wrong-secret-value" not in message and "CLIENT_SECRET" in message
    finally:
        await client.aclose()


async def test_transient_failures_are_retried_in_place_then_retryable(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    sim.set_faults(error_rate=1.0, limit=1, path_prefix="/customer/acme/customers")
    assert await client.identity.find_principal("ann@example.com") is None
    sim.set_faults(error_rate=1.0, limit=None)
    with pytest.raises(ProviderUnavailable):
        await client.identity.find_principal("ann@example.com")
    sim.set_faults(error_rate=0.0, rate_limit_rate=1.0, retry_after_seconds=30)
    with pytest.raises(ProviderUnavailable) as raised:
        await client.identity.find_principal("ann@example.com")
    assert raised.value.next_retry_delay is not None


async def test_a_signup_with_a_lost_answer_is_not_sent_again_in_place(
    sim: EmporixSimulator, client: EmporixClient
) -> None:
    sim.set_faults(lost_answer_rate=1.0, limit=1, path_prefix="/customer/acme/signup")
    with pytest.raises(ProviderUnavailable):
        await client.identity.create_principal(new(), PASSWORD)
    assert sim.count("POST", "/customer/acme/signup") == 1
    created = await client.identity.create_principal(new(), PASSWORD)  # Temporal's retry
    assert created.id == "p-1" and len(sim.customers) == 1


def test_query_literals_and_names() -> None:
    assert query_literal("a+b@example.com") == '"a+b@example.com"'
    for bad in ('a"b@example.com', "a\\b@example.com", "a\nb@example.com"):
        with pytest.raises(InvalidRequest):
            query_literal(bad)
    assert split_name("Mary Ann Smith") == ("Mary Ann", "Smith")
    assert split_name("Cher") == ("", "Cher")


def test_settings_name_what_is_missing_or_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_EMPORIX_")
    with pytest.raises(ConfigurationError, match="REGISTRATION_EMPORIX_TENANT"):
        EmporixClient.from_env()
    monkeypatch.setenv("REGISTRATION_EMPORIX_TENANT", "Bad Tenant")
    with pytest.raises(ConfigurationError, match="REGISTRATION_EMPORIX_TENANT"):
        load_vendor_settings(EmporixSettings)
    monkeypatch.setenv("REGISTRATION_EMPORIX_TENANT", "acme")
    with pytest.raises(ConfigurationError, match="STOREFRONT_CLIENT_ID"):
        EmporixClient.from_env()
    monkeypatch.setenv("REGISTRATION_EMPORIX_TENNANT", "acme")
    with pytest.raises(ConfigurationError, match="REGISTRATION_EMPORIX_TENNANT"):
        load_vendor_settings(EmporixSettings)


def test_the_registry_refuses_splitting_the_one_record(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, identity_provider="emporix", customers_provider="local")
    with pytest.raises(ConfigurationError, match="must be 'emporix' too"):
        configured(settings)


# The simulator's documented behaviour ----------------------------------------------------------


async def test_simulator_scopes_tokens_and_documented_bodies(sim: EmporixSimulator) -> None:
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        anonymous = (
            await http.get(
                "/customerlogin/auth/anonymous/login",
                params={"tenant": "acme", "client_id": sim.storefront_client_id},
            )
        ).json()["access_token"]
        as_anonymous = {"Authorization": f"Bearer {anonymous}"}
        listing = await http.get("/customer/acme/customers", headers=as_anonymous)
        assert listing.status_code == 403
        assert listing.json() == {
            "type": "Forbidden",
            "status": 403,
            "message": "User not authorized.",
        }
        unknown = await http.get("/customer/acme/customers", headers={"Authorization": "Bearer x"})
        assert unknown.json()["fault"]["detail"]["errorcode"] == "oauth.v2.InvalidAccessToken"
        body = {"email": "z@example.com", "password": PASSWORD}
        assert (
            await http.post("/customer/acme/signup", json=body, headers=as_anonymous)
        ).status_code == 201
        duplicate = await http.post("/customer/acme/signup", json=body, headers=as_anonymous)
        assert duplicate.status_code == 409
        assert duplicate.json() == {
            "status": 409,
            "type": "conflict_resource",
            "message": "Duplicate account 'z@example.com' for tenant 'acme'.",
        }
        login = await http.post("/customer/acme/login", json=body, headers=as_anonymous)
        assert login.status_code == 401  # inactive
        token = (
            await http.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": sim.client_id,
                    "client_secret": sim.client_secret,
                    "scope": f"tenant=acme {READ_SCOPE}",
                },
            )
        ).json()
        assert token["scope"] == f"tenant=acme {READ_SCOPE}"
        service = {"Authorization": f"Bearer {token['access_token']}"}
        (doc,) = sim.customers.values()
        path = f"/customer/acme/customers/{doc['customerNumber']}"
        assert (await http.delete(path, headers=service)).status_code == 403  # read only
        missing = await http.get("/customer/acme/customers/999", headers=service)
        assert missing.status_code == 404 and missing.json()["message"] == "Customer not Found"
