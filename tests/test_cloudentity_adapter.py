"""The Cloudentity adapter against the loopback simulator (every operation, the error mapping, the
token refresh), and the simulator's own rules (scopes, unique identifiers, the status machine,
codes, brute force, ETags, idempotency keys, by_key, the error body)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from activities.errors import (
    ConcurrentModification,
    ConfigurationError,
    Conflict,
    InvalidRequest,
    NotFound,
    ProviderUnavailable,
    TooManyAttempts,
)
from activities.providers import configured, open_providers
from activities.providers.cloudentity import (
    METADATA_CUSTOMER_ID,
    METADATA_PENDING,
    CloudentityClient,
    CloudentityIdentity,
    CloudentitySettings,
    idempotency_key,
)
from activities.providers.settings import load_vendor_settings
from activities.roles import CodeIssuer, CodeOwner, NewPrincipal
from tests.simulators.cloudentity import POOL, TENANT, CloudentitySimulator, running
from tests.simulators.loopback import point_env
from tests.stack import make_settings

PASSWORD = "correct horse battery staple"
API = f"/api/identity/{TENANT}/system/pools/{POOL}"


@pytest.fixture
async def sim() -> AsyncIterator[CloudentitySimulator]:
    async with running() as simulator:
        yield simulator


def settings_for(sim: CloudentitySimulator, **overrides: Any) -> CloudentitySettings:
    values: dict[str, Any] = {
        "base_url": sim.base_url,
        "tenant": TENANT,
        "pool_id": POOL,
        "client_id": sim.client_id,
        "client_secret": SecretStr(sim.client_secret),
        **overrides,
    }
    return CloudentitySettings(_env_file=None, **values)


@pytest.fixture
async def client(sim: CloudentitySimulator) -> AsyncIterator[CloudentityClient]:
    made = CloudentityClient(settings_for(sim))
    yield made
    await made.aclose()


@pytest.fixture
def identity(client: CloudentityClient) -> CloudentityIdentity:
    return client.identity


def new_principal(email: str = "alice@example.com", user_id: str = "u-alice") -> NewPrincipal:
    return NewPrincipal(id=user_id, email=email, email_canonical=email.lower(), name="Alice A")


def calls(sim: CloudentitySimulator, method: str, path: str) -> list[int]:
    return [r.status for r in sim.requests if r.method == method and r.path == path]


async def raw(sim: CloudentitySimulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request of our own, with a token of the given scopes (default: the client's)."""
    scope = str(kwargs.pop("scope", "identity identity_self_registration"))
    async with httpx.AsyncClient(base_url=sim.base_url) as http:
        token = await http.post(
            f"/{TENANT}/system/oauth2/token",
            data={
                "grant_type": "client_credentials",
                "client_id": sim.client_id,
                "client_secret": sim.client_secret,
                "scope": scope,
            },
        )
        headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
        headers.update(kwargs.pop("headers", {}))
        return await http.request(method, path, headers=headers, **kwargs)


# The identity role ---------------------------------------------------------------------------


async def test_it_is_an_identity_provider_with_its_own_codes(identity: CloudentityIdentity) -> None:
    assert isinstance(identity, CodeIssuer)
    assert identity.capabilities.code is CodeOwner.PROVIDER
    assert identity.capabilities.code_pattern == "[0-9]{8}"
    assert not identity.in_process


async def test_the_code_format_is_the_pools_setting(sim: CloudentitySimulator) -> None:
    made = CloudentityClient(settings_for(sim, code_length=6))
    assert made.identity.capabilities.code_pattern == "[0-9]{6}"
    await made.aclose()


async def test_create_makes_a_new_user_with_an_unverified_address(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    created = await identity.create_principal(new_principal("Alice@Example.com"), PASSWORD)
    assert (created.id, created.email, created.name) == ("u-alice", "alice@example.com", "Alice A")
    assert not created.active and created.replaceable
    user = sim.users["u-alice"]
    assert user["status"] == "new"
    assert user["verifiable_addresses"][0]["verified"] is False
    assert user["metadata"][METADATA_PENDING] is True
    assert sim.passwords["u-alice"] == PASSWORD
    (create,) = [r for r in sim.requests if r.method == "POST" and r.path == f"{API}/users"]
    assert create.headers["x-idempotency-key"] == idempotency_key("u-alice")
    assert create.body["credentials"] == [{"type": "password", "password": "***"}]


async def test_a_retried_create_returns_the_same_user(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    first = await identity.create_principal(new_principal(), PASSWORD)
    # Within the minute: Cloudentity replays the first answer.
    again = await identity.create_principal(new_principal(), PASSWORD)
    assert again.id == first.id and len(sim.users) == 1
    # After the minute: the id exists (409), read back and kept.
    sim.idempotency.clear()
    later = await identity.create_principal(new_principal(), PASSWORD)
    assert later.id == first.id and len(sim.users) == 1
    assert 409 in calls(sim, "POST", f"{API}/users")


async def test_a_lost_create_answer_is_repeated_with_the_same_key(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    sim.set_faults(lost_answer_rate=1.0, limit=1, path_prefix=f"{API}/users", method="POST")
    created = await identity.create_principal(new_principal(), PASSWORD)
    assert created.id == "u-alice" and len(sim.users) == 1


async def test_an_email_taken_by_another_user_is_a_conflict(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    sim.add_user("alice@example.com")
    with pytest.raises(Conflict) as raised:
        await identity.create_principal(new_principal(), PASSWORD)
    assert "alice@example.com" not in raised.value.message
    assert PASSWORD not in raised.value.message


async def test_find_principal_by_identifier(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    assert await identity.find_principal("alice@example.com") is None
    await identity.create_principal(new_principal(), PASSWORD)
    found = await identity.find_principal("alice@example.com")
    assert found is not None and found.id == "u-alice" and found.replaceable and not found.active
    staff = sim.add_user("bob@example.com")
    bob = await identity.find_principal("bob@example.com")
    assert bob is not None and bob.id == staff["id"] and bob.active and not bob.replaceable
    inactive = sim.add_user("carol@example.com", status="inactive")
    carol = await identity.find_principal("carol@example.com")
    assert carol is not None and carol.id == inactive["id"]
    assert not carol.active and not carol.replaceable


async def test_codes_activate_and_link(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    await identity.create_principal(new_principal(), PASSWORD)
    code = await identity.new_code("u-alice")
    assert code.isdigit() and len(code) == 8
    assert await identity.confirm_code("u-alice", code)
    user = sim.users["u-alice"]
    assert user["status"] == "active" and user["verifiable_addresses"][0]["verified"]
    pending = await identity.get_principal("u-alice")
    assert pending is not None and not pending.active  # not linked yet: the workflow's step 5
    # A retry of the confirmation whose answer was lost: Cloudentity refuses (not new), ours.
    assert await identity.confirm_code("u-alice", code)

    activated = await identity.activate_principal("u-alice", "c-1", "CUST1", pending.version)
    assert activated.active and activated.customer_id == "c-1"
    assert activated.customer_number == "CUST1"
    metadata = sim.users["u-alice"]["metadata"]
    assert metadata[METADATA_CUSTOMER_ID] == "c-1" and METADATA_PENDING not in metadata
    (put,) = [r for r in sim.requests if r.method == "PUT"]
    assert put.headers["if-match"] == pending.version


async def test_a_wrong_code_is_false_and_a_resend_replaces_the_code(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    await identity.create_principal(new_principal(), PASSWORD)
    old = await identity.new_code("u-alice")
    new = await identity.new_code("u-alice")
    assert not await identity.confirm_code("u-alice", old if old != new else "00000000")
    assert sim.users["u-alice"]["status"] == "new"
    assert await identity.confirm_code("u-alice", new)


async def test_an_expired_code_is_refused(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    now = [1000.0]
    sim.clock = lambda: now[0]
    await identity.create_principal(new_principal(), PASSWORD)
    code = await identity.new_code("u-alice")
    now[0] += sim.code_ttl_seconds + 1
    sim.expire_tokens()
    assert not await identity.confirm_code("u-alice", code)


async def test_the_brute_force_lock_is_too_many_attempts_without_retries(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    await identity.create_principal(new_principal(), PASSWORD)
    code = await identity.new_code("u-alice")
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    for _ in range(5):
        assert not await identity.confirm_code("u-alice", wrong)
    with pytest.raises(TooManyAttempts) as raised:
        await identity.confirm_code("u-alice", code)
    assert not raised.value.retryable and code not in raised.value.message
    assert calls(sim, "POST", f"{API}/users/u-alice/activate")[-1] == 429
    assert len(calls(sim, "POST", f"{API}/users/u-alice/activate")) == 6  # no retry of the 429


async def test_staff_approval_activates_and_verifies_at_cloudentity(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    created = await identity.create_principal(new_principal(), PASSWORD)
    activated = await identity.activate_principal("u-alice", "c-1", "CUST1", created.version)
    assert activated.active
    user = sim.users["u-alice"]
    assert user["status"] == "active" and user["verifiable_addresses"][0]["verified"] is True


async def test_a_stale_version_is_a_concurrent_modification(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    created = await identity.create_principal(new_principal(), PASSWORD)
    sim.bump("u-alice")  # another writer
    with pytest.raises(ConcurrentModification):
        await identity.activate_principal("u-alice", "c-1", "CUST1", created.version)
    assert sim.users["u-alice"]["status"] == "new"


async def test_the_conditional_put_answers_412_on_a_race(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    created = await identity.create_principal(new_principal(), PASSWORD)
    response = await raw(
        sim,
        "PUT",
        f"{API}/users/u-alice",
        json={"status": "active"},
        headers={"If-Match": 'W/"stale"'},
    )
    assert response.status_code == 412
    assert response.json()["error_code"] == "precondition_failed"
    assert response.json()["status_code"] == 412
    assert sim.etag("u-alice") == created.version


async def test_activating_a_deleted_user_is_not_found(identity: CloudentityIdentity) -> None:
    with pytest.raises(NotFound):
        await identity.activate_principal("u-gone", "c-1", "CUST1", 'W/"x"')
    with pytest.raises(NotFound):
        await identity.new_code("u-gone")


async def test_undo_deletes_and_a_second_undo_is_a_no_op(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    await identity.create_principal(new_principal(), PASSWORD)
    assert await identity.undo_principal("u-alice")
    assert sim.users == {}
    assert not await identity.undo_principal("u-alice")
    assert await identity.get_principal("u-alice") is None


async def test_decoy_create_creates_nothing(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    await identity.decoy_create(new_principal(), PASSWORD)
    assert sim.users == {}


async def test_the_token_is_cached_and_refreshed_once_on_401(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    await identity.find_principal("a@example.com")
    await identity.find_principal("b@example.com")
    assert sim.token_requests == 1
    sim.expire_tokens()
    assert await identity.find_principal("c@example.com") is None
    assert sim.token_requests == 2


async def test_a_client_without_a_scope_is_a_retryable_configuration_error(
    sim: CloudentitySimulator,
) -> None:
    sim.client_scopes = ("identity",)
    made = CloudentityClient(settings_for(sim))
    await made.identity.create_principal(new_principal(), PASSWORD)
    with pytest.raises(ProviderUnavailable) as raised:
        await made.identity.new_code("u-alice")
    assert "HTTP 403" in raised.value.message
    assert "REGISTRATION_CLOUDENTITY_CLIENT_ID" in raised.value.message
    assert sim.client_secret not in raised.value.message
    await made.aclose()


async def test_5xx_is_retried_in_place_then_retryable(
    sim: CloudentitySimulator, identity: CloudentityIdentity
) -> None:
    sim.set_faults(error_rate=1.0, limit=1)
    assert await identity.get_principal("u-x") is None  # one 503, then the answer
    sim.set_faults(error_rate=1.0)
    with pytest.raises(ProviderUnavailable):
        await identity.get_principal("u-x")


async def test_a_schema_rejection_is_invalid_request(
    sim: CloudentitySimulator, client: CloudentityClient
) -> None:
    await client.identity.create_principal(new_principal(), PASSWORD)
    with pytest.raises(InvalidRequest) as raised:
        await client.call("PUT", client.path("users", "u-alice"), json={"metadata": "nope"})
    assert "HTTP 422" in raised.value.message and not raised.value.retryable


# Settings and the registry --------------------------------------------------------------------


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    point_env(monkeypatch, "REGISTRATION_CLOUDENTITY_")
    with pytest.raises(ConfigurationError, match="REGISTRATION_CLOUDENTITY_BASE_URL"):
        CloudentityClient.from_env()
    monkeypatch.setenv("REGISTRATION_CLOUDENTITY_BASE_URL", "https://t.eu.authz.cloudentity.io")
    with pytest.raises(ConfigurationError, match="REGISTRATION_CLOUDENTITY_TENANT"):
        CloudentityClient.from_env()
    monkeypatch.setenv("REGISTRATION_CLOUDENTITY_TENANT", "../x")
    with pytest.raises(ConfigurationError, match="REGISTRATION_CLOUDENTITY_TENANT"):
        load_vendor_settings(CloudentitySettings)
    monkeypatch.setenv("REGISTRATION_CLOUDENTITY_TENANT", "t")
    monkeypatch.setenv("REGISTRATION_CLOUDENTITY_POOLID", "p")
    with pytest.raises(ConfigurationError, match="REGISTRATION_CLOUDENTITY_POOLID"):
        load_vendor_settings(CloudentitySettings)


@pytest.mark.parametrize("role", ["customers", "mail"])
def test_cloudentity_serves_identity_only(role: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, **{f"{role}_provider": "cloudentity"})
    with pytest.raises(ConfigurationError) as raised:
        configured(settings)
    message = str(raised.value)
    assert f"REGISTRATION_{role.upper()}_PROVIDER='cloudentity' does not serve {role}" in message
    assert "it serves identity only" in message


async def test_the_worker_needs_the_pools_code_pattern(
    sim: CloudentitySimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "BASE_URL": sim.base_url,
        "TENANT": TENANT,
        "POOL_ID": POOL,
        "CLIENT_ID": sim.client_id,
        "CLIENT_SECRET": sim.client_secret,
        "CODE_LENGTH": "7",
    }.items():
        monkeypatch.setenv(f"REGISTRATION_CLOUDENTITY_{name}", value)
    settings = make_settings(tmp_path, identity_provider="cloudentity")
    async with open_providers(settings) as providers:
        assert providers.code_issuer() is not None
        with pytest.raises(ConfigurationError, match=r"\[0-9\]\{7\}"):
            providers.check_code_pattern(settings)
        providers.check_code_pattern(settings.model_copy(update={"code_pattern": "[0-9]{7}"}))


# The simulator's own rules --------------------------------------------------------------------


async def test_each_endpoint_checks_its_scope(sim: CloudentitySimulator) -> None:
    generate = await raw(
        sim,
        "POST",
        f"{API}/user/code/generate",
        json={"type": "activation", "userID": "x"},
        scope="identity",
    )
    assert generate.status_code == 403
    assert generate.json()["error_code"] == "insufficient_scope"
    create = await raw(
        sim, "POST", f"{API}/users", json={"status": "new"}, scope="identity_self_registration"
    )
    assert create.status_code == 403
    unauthenticated = await httpx.AsyncClient(base_url=sim.base_url).get(f"{API}/users/x")
    assert unauthenticated.status_code == 401


async def test_identifiers_are_unique(sim: CloudentitySimulator) -> None:
    body = {"status": "new", "identifiers": [{"identifier": "A@x.io", "type": "email"}]}
    assert (await raw(sim, "POST", f"{API}/users", json=body)).status_code == 201
    again = await raw(sim, "POST", f"{API}/users", json=body)
    assert again.status_code == 409
    assert set(again.json()) >= {"status_code", "error", "error_code"}


async def test_activation_needs_a_new_user(sim: CloudentitySimulator) -> None:
    user = sim.add_user("a@x.io", status="active")
    generated = await raw(
        sim, "POST", f"{API}/user/code/generate", json={"type": "activation", "userID": user["id"]}
    )
    activate = await raw(
        sim,
        "POST",
        f"{API}/users/{user['id']}/activate",
        json={"code": generated.json()["code"]},
    )
    assert activate.status_code == 400 and user["status"] == "active"


async def test_idempotency_keys_replay_within_a_minute(sim: CloudentitySimulator) -> None:
    now = [0.0]
    sim.clock = lambda: now[0]
    key = "k" * 40
    body = {"id": "u1", "status": "new"}
    first = await raw(sim, "POST", f"{API}/users", json=body, headers={"X-Idempotency-Key": key})
    now[0] = 30
    sim.expire_tokens()
    replay = await raw(sim, "POST", f"{API}/users", json=body, headers={"X-Idempotency-Key": key})
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.headers["X-Idempotent-Replayed"] == "true"
    assert replay.headers["ETag"] == first.headers["ETag"]
    now[0] = 91
    sim.expire_tokens()
    later = await raw(sim, "POST", f"{API}/users", json=body, headers={"X-Idempotency-Key": key})
    assert later.status_code == 409
    short = await raw(sim, "POST", f"{API}/users", json=body, headers={"X-Idempotency-Key": "k"})
    assert short.status_code == 400


async def test_by_key_ignores_unverified_addresses(sim: CloudentitySimulator) -> None:
    sim.add_user("v@x.io", verified=True)
    sim.add_user("u@x.io", verified=False, status="new")
    found = await raw(sim, "POST", f"{API}/users/by_key", json={"address": "v@x.io"})
    assert found.status_code == 200 and "ETag" in found.headers
    missing = await raw(sim, "POST", f"{API}/users/by_key", json={"address": "u@x.io"})
    assert missing.status_code == 404
    by_identifier = await raw(sim, "POST", f"{API}/users/by_key", json={"identifier": "u@x.io"})
    assert by_identifier.status_code == 200
