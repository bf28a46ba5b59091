"""The Norce adapter against the loopback Norce simulator: each operation, the error mapping,
the token cache under load, and the password never in logs or errors."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from activities.errors import (
    AccountExists,
    ConcurrentModification,
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderError,
    ProviderUnavailable,
)
from activities.providers import configured
from activities.providers.http import NO_RETRIES
from activities.providers.norce import (
    CODE_PREFIX,
    NorceClient,
    NorceSettings,
    code_for,
    parse_date,
)
from activities.providers.settings import load_vendor_settings
from activities.roles import NewCustomer, NewPrincipal
from tests.simulators.loopback import point_env
from tests.simulators.norce import SERVICE, Faults, NorceSimulator, running
from tests.stack import make_settings

PASSWORD = "Tr0ub4dor&3-horse+battery staple"  # '&', '+' and ' ' must be encoded in the query


@pytest.fixture
async def sim() -> AsyncIterator[NorceSimulator]:
    async with running(NorceSimulator(seed=3)) as simulator:
        yield simulator


def settings_for(sim: NorceSimulator) -> NorceSettings:
    return NorceSettings(
        _env_file=None,
        base_url=sim.base_url,
        client_id=sim.client_id,
        client_secret=SecretStr(sim.client_secret),
        scope="playground",
        application_id=sim.application_id,
    )


@pytest.fixture
async def client(sim: NorceSimulator) -> AsyncIterator[NorceClient]:
    made = NorceClient(settings_for(sim))
    yield made
    await made.aclose()


def new_principal(email: str = "alice@example.com", name: str = "Alice Andersson") -> NewPrincipal:
    customer = NewCustomer(id=str(uuid.uuid4()), email=email, email_canonical=email, name=name)
    return NewPrincipal(
        id=str(uuid.uuid4()), email=email, email_canonical=email, name=name, customer=customer
    )


# Both roles -----------------------------------------------------------------------------------


async def test_sign_up_activate_login(client: NorceClient, sim: NorceSimulator) -> None:
    new = new_principal()
    created = await client.identity.create_principal(new, PASSWORD)
    assert created.id == new.id and not created.active and created.replaceable
    (doc,) = sim.by_email("alice@example.com")
    assert doc["Code"] == code_for(new.id) and len(doc["Code"]) <= 50
    assert doc["Code"] == CODE_PREFIX + new.id
    assert doc["IsActive"] is True and doc["Account"]["IsActive"] is False
    assert (doc["FirstName"], doc["LastName"]) == ("Alice", "Andersson")
    assert created.customer_id == str(doc["Id"]) and created.customer_number == doc["Code"]
    assert not sim.can_login("alice@example.com", PASSWORD)  # inactive until activation
    (create,) = [r for r in sim.requests if r.path.endswith("/CreateCustomer3")]
    assert create.query == {"doSendMail": "false", "createdBy": "1"}  # password not recorded

    # Idempotent: the same id again returns the record, nothing new is created.
    assert (await client.identity.create_principal(new, PASSWORD)).customer_id == str(doc["Id"])
    assert sim.count("CreateCustomer3") == 1

    found = await client.identity.find_principal("alice@example.com")
    assert found is not None and found.id == new.id and found.replaceable
    with pytest.raises(ConcurrentModification):
        await client.identity.activate_principal(new.id, None, None, "stale")
    active = await client.identity.activate_principal(new.id, None, None, created.version)
    assert active.active and not active.linked_existing_customer
    assert active.customer_id == str(doc["Id"])
    assert sim.can_login("alice@example.com", PASSWORD)
    assert (await client.identity.get_principal(new.id)) == active


async def test_undo_inactivates_and_is_idempotent(client: NorceClient, sim: NorceSimulator) -> None:
    new = new_principal()
    await client.identity.create_principal(new, PASSWORD)
    assert await client.identity.undo_principal(new.id) is True
    (doc,) = sim.by_email("alice@example.com")
    assert doc["IsActive"] is False and doc["Account"]["IsActive"] is False  # no delete
    assert not sim.can_login("alice@example.com", PASSWORD)
    assert await client.identity.undo_principal(new.id) is False
    assert await client.identity.get_principal(new.id) is None  # hidden once inactive
    assert await client.identity.find_principal("alice@example.com") is None
    assert await client.identity.undo_principal(str(uuid.uuid4())) is False  # never created


async def test_an_imported_customer_is_bound_and_only_the_login_undone(
    client: NorceClient, sim: NorceSimulator
) -> None:
    imported = sim.add_customer("bob@example.com", "Bob", code="ERP-0043")
    assert await client.identity.find_principal("bob@example.com") is None  # no login yet
    new = new_principal("bob@example.com", "Bob Berg")
    bound = await client.identity.create_principal(new, PASSWORD)
    assert bound.linked_existing_customer and bound.customer_id == str(imported["Id"])
    assert bound.customer_number == "ERP-0043"
    assert len(sim.customers) == 1  # one record
    assert imported["Account"]["LoginName"] == "bob@example.com"
    assert imported["Account"]["IsActive"] is False and imported["Code"] == "ERP-0043"
    assert sim.count("CreateCustomer3") == 0 and sim.count("UpdateCustomer3") == 1

    assert await client.identity.undo_principal(new.id) is True
    assert imported["IsActive"] is True  # never inactivated: not ours
    assert imported["Account"]["IsActive"] is False
    assert not sim.can_login("bob@example.com", PASSWORD)  # the password was replaced too
    assert await client.identity.undo_principal(new.id) is False

    # A later registration binds it again.
    again = new_principal("bob@example.com", "Bob Berg")
    rebound = await client.identity.create_principal(again, PASSWORD)
    active = await client.identity.activate_principal(again.id, None, None, rebound.version)
    assert active.active and active.linked_existing_customer
    assert sim.can_login("bob@example.com", PASSWORD) and len(sim.customers) == 1


async def test_an_email_with_an_account_is_not_taken_over(
    client: NorceClient, sim: NorceSimulator
) -> None:
    sim.add_customer("carol@example.com", "Carol", login="carol@example.com", password="x")
    found = await client.identity.find_principal("carol@example.com")
    assert found is not None and found.active and not found.replaceable
    with pytest.raises(AccountExists):
        await client.identity.create_principal(new_principal("carol@example.com"), PASSWORD)
    # An inactive login owned by someone else: not replaceable either.
    sim.add_customer("dan@example.com", "Dan", login="dan@example.com", account_active=False)
    other = await client.identity.find_principal("dan@example.com")
    assert other is not None and not other.active and not other.replaceable


async def test_an_email_held_by_an_inactive_customer_is_account_exists(
    client: NorceClient, sim: NorceSimulator
) -> None:
    sim.add_customer("eve@example.com", "Eve", active=False)
    assert await client.identity.find_principal("eve@example.com") is None
    with pytest.raises(AccountExists) as err:
        await client.identity.create_principal(new_principal("eve@example.com"), PASSWORD)
    assert "eve@" not in str(err.value) and PASSWORD not in str(err.value)


async def test_decoy_create_only_reads(client: NorceClient, sim: NorceSimulator) -> None:
    await client.identity.decoy_create(new_principal(), PASSWORD)
    assert sim.customers == {}
    assert {r.path.rsplit("/", 1)[-1] for r in sim.requests} <= {
        "token",
        "GetCustomerByCode",
        "GetCustomerByEmail",
    }


async def test_activation_of_a_missing_login_is_not_found(client: NorceClient) -> None:
    with pytest.raises(NotFound):
        await client.identity.activate_principal(str(uuid.uuid4()), None, None, "v")


# Customers only -------------------------------------------------------------------------------


def new_customer(email: str = "frank@example.com") -> NewCustomer:
    return NewCustomer(id=str(uuid.uuid4()), email=email, email_canonical=email, name="Frank Fors")


async def test_customers_only_create_link_undo(client: NorceClient, sim: NorceSimulator) -> None:
    new = new_customer()
    link = await client.customers.link_or_create_customer(new)
    (doc,) = sim.by_email("frank@example.com")
    assert link.created and doc["Account"] is None and doc["Code"] == code_for(new.id)
    assert link.customer.id == str(doc["Id"]) and link.customer.number == doc["Code"]
    again = await client.customers.link_or_create_customer(new)  # retried: the same, created
    assert again == link and sim.count("CreateCustomer3") == 1
    create = next(r for r in sim.requests if r.path.endswith("/CreateCustomer3"))
    assert "password" not in create.query

    # Undo by the workflow's id or by Norce's: inactivated once.
    assert await client.customers.undo_customer(new.id) is True
    assert doc["IsActive"] is False
    assert await client.customers.undo_customer(link.customer.id) is False
    assert await client.customers.undo_customer(new.id) is False


async def test_customers_only_links_an_existing_customer_and_never_undoes_it(
    client: NorceClient, sim: NorceSimulator
) -> None:
    imported = sim.add_customer("gina@example.com", "Gina", code="ERP-7")
    link = await client.customers.link_or_create_customer(new_customer("gina@example.com"))
    assert not link.created and link.customer.id == str(imported["Id"])
    assert link.customer.number == "ERP-7"
    assert await client.customers.undo_customer(link.customer.id) is False
    assert imported["IsActive"] is True and sim.count("InactivateCustomer") == 0


# Errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message", "expected"),
    [
        ("CustomerNotUnique", "A customer with this email already exists", Conflict),
        ("CustomerNotFound", "Customer not found", NotFound),
        ("ValidationError", "FirstName exceeds MaxLength 50", InvalidRequest),
        ("SomethingElse", "A business rule refused it", InvalidRequest),
        ("SqlError", "Execution Timeout Expired", ProviderUnavailable),
    ],
)
async def test_business_errors_as_500_are_classified(
    client: NorceClient,
    sim: NorceSimulator,
    key: str,
    message: str,
    expected: type[ProviderError],
) -> None:
    client._http.retries = NO_RETRIES  # else a transient one is repeated in place, and passes
    sim.faults = Faults(path_prefix="/commerce", business_error=(key, message))
    with pytest.raises(ProviderError) as err:
        await client.customers.undo_customer(str(uuid.uuid4()))
    assert type(err.value) is expected
    assert err.value.non_retryable is not expected.retryable


async def test_a_500_page_is_a_retryable_server_error(
    client: NorceClient, sim: NorceSimulator
) -> None:
    client._http.retries = NO_RETRIES
    sim.faults = Faults(path_prefix="/commerce", server_error_rate=1.0)
    with pytest.raises(ProviderUnavailable):
        await client.identity.find_principal("x@example.com")
    sim.faults = Faults(path_prefix="/commerce", error_rate=1.0, limit=1)
    client._http.retries = NorceClient(settings_for(sim))._http.retries
    assert await client.identity.find_principal("x@example.com") is None  # retried in place


async def test_token_cached_under_load(client: NorceClient, sim: NorceSimulator) -> None:
    await asyncio.gather(*(client.identity.find_principal(f"u{i}@example.com") for i in range(100)))
    assert sim.token_requests == 1 and sim.count("GetCustomerByEmail", 200) == 100


async def test_token_rate_limit_is_retryable(sim: NorceSimulator) -> None:
    sim.token_burst = 0
    sim.__post_init__()  # an empty bucket
    made = NorceClient(settings_for(sim))
    try:
        with pytest.raises(ProviderUnavailable) as err:
            await made.identity.find_principal("x@example.com")
    finally:
        await made.aclose()
    assert "429" in str(err.value) and sim.count("token", 429) >= 1


async def test_a_wrong_application_or_secret_is_a_retryable_setup_error(
    sim: NorceSimulator,
) -> None:
    for change in ({"application_id": "nope"}, {"client_secret": SecretStr("nope")}):
        made = NorceClient(settings_for(sim).model_copy(update=change))
        try:
            with pytest.raises(ProviderUnavailable) as err:
                await made.identity.find_principal("x@example.com")
        finally:
            await made.aclose()
        assert "REGISTRATION_NORCE_" in str(err.value) and "nope" not in str(err.value)


async def test_the_password_never_appears_in_logs_or_errors(
    client: NorceClient, sim: NorceSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "activities"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    new = new_principal()
    await client.identity.create_principal(new, PASSWORD)
    errors: list[BaseException] = []
    # A business error that echoes the request URL, a lost answer, and a 500 page.
    for faults in (
        Faults(
            path_prefix="/commerce/customer/1.1/CreateCustomer3",
            business_error=("ValidationError", f"invalid request ?password={PASSWORD}"),
        ),
        Faults(path_prefix="/commerce/customer/1.1/CreateCustomer3", server_error_rate=1.0),
        Faults(path_prefix="/commerce/customer/1.1/UpdateCustomer3", lost_answer_rate=1.0),
    ):
        sim.faults = faults
        try:
            if "Update" in faults.path_prefix:
                sim.add_customer(f"{uuid.uuid4().hex}@example.com", "Imp")
                imported = list(sim.customers.values())[-1]
                await client.identity.create_principal(new_principal(imported["Email"]), PASSWORD)
            else:
                await client.identity.create_principal(new_principal("z@example.com"), PASSWORD)
        except ProviderError as err:
            errors.append(err)
    assert len(errors) == 3
    encoded = ("Tr0ub4dor%263", "Tr0ub4dor&3", "horse+battery", "horse%2Bbattery")
    texts = [caplog.text, *(repr(e) + str(e) for e in errors)]
    assert "CreateCustomer3" in caplog.text  # the calls were logged, by path
    for text in texts:
        assert PASSWORD not in text
        assert not any(fragment in text for fragment in encoded), text
    assert all(PASSWORD not in repr(r.body) + repr(r.query) for r in sim.requests)


# Records and settings -------------------------------------------------------------------------


def test_dotnet_and_iso_dates() -> None:
    moment = parse_date("/Date(1583484623047+0100)/")
    assert moment is not None and moment.isoformat() == "2020-03-06T09:50:23.047000+01:00"
    assert parse_date("/Date(1583484623047)/") is not None
    iso = parse_date("2019-08-24T14:15:22Z")
    assert iso is not None and iso.utcoffset() is not None
    assert parse_date(None) is None and parse_date("soon") is None


def test_codes_carry_no_personal_data() -> None:
    assert code_for("0b6f0c7e-8f0b-4bb5-9d59-0d3f6c1b2a9e").startswith(CODE_PREFIX)
    with pytest.raises(InvalidRequest):
        code_for("alice@example.com")
    with pytest.raises(InvalidRequest):
        code_for("x" * 60)


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_NORCE_")
    monkeypatch.setenv("REGISTRATION_NORCE_BASE_URL", "https://demo.api-se.playground.norce.tech")
    monkeypatch.setenv("REGISTRATION_NORCE_CLIENT_ID", "id")
    monkeypatch.setenv("REGISTRATION_NORCE_CLIENT_SECRET", "secret")
    with pytest.raises(ConfigurationError, match="REGISTRATION_NORCE_SCOPE"):
        NorceClient.from_env()
    monkeypatch.setenv("REGISTRATION_NORCE_SCOPE", "playground")
    with pytest.raises(ConfigurationError, match="REGISTRATION_NORCE_APPLICATION_ID"):
        NorceClient.from_env()
    monkeypatch.setenv("REGISTRATION_NORCE_APLICATION_ID", "1")
    with pytest.raises(ConfigurationError, match="REGISTRATION_NORCE_APPLICATION_ID"):
        load_vendor_settings(NorceSettings)
    monkeypatch.setenv("REGISTRATION_NORCE_BASE_URL", "https://x.norce.tech/commerce/customer")
    with pytest.raises(ConfigurationError, match="REGISTRATION_NORCE_BASE_URL"):
        load_vendor_settings(NorceSettings)


def test_registry_requires_norce_customers_for_norce_identity(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, identity_provider="norce", customers_provider="local")
    with pytest.raises(ConfigurationError, match="CUSTOMERS_PROVIDER"):
        configured(settings)
    both = make_settings(tmp_path, identity_provider="norce", customers_provider="norce")
    assert configured(both)["identity"].name == "norce"
    mixed = make_settings(tmp_path, identity_provider="local", customers_provider="norce")
    assert configured(mixed)["customers"].name == "norce"


async def test_a_create_whose_answer_was_lost_is_found_by_its_code_on_retry(
    client: NorceClient, sim: NorceSimulator
) -> None:
    """CreateCustomer3 is not repeated in place (a repeat could create twice); the activity's
    retry finds the earlier attempt's customer by its deterministic code."""
    sim.faults = Faults(path_prefix=f"{SERVICE}/CreateCustomer3", lost_answer_rate=1.0, limit=1)
    new = new_principal("lost@example.com")
    with pytest.raises(ProviderUnavailable):
        await client.identity.create_principal(new, PASSWORD)
    assert sim.count("CreateCustomer3") == 1 and len(sim.customers) == 1  # done, unanswered
    again = await client.identity.create_principal(new, PASSWORD)
    assert sim.count("CreateCustomer3") == 1 and len(sim.customers) == 1
    assert again.customer_id == str(the_only(sim)["Id"]) and not again.active

    link_new = new_customer("lost2@example.com")
    sim.faults = Faults(path_prefix=f"{SERVICE}/CreateCustomer3", lost_answer_rate=1.0, limit=1)
    with pytest.raises(ProviderUnavailable):
        await client.customers.link_or_create_customer(link_new)
    link = await client.customers.link_or_create_customer(link_new)
    assert link.created and sim.count("CreateCustomer3") == 2 and len(sim.customers) == 2


def the_only(sim: NorceSimulator) -> dict[str, object]:
    (doc,) = sim.customers.values()
    return doc
