"""The HTTP API over real HTTP, in front of a worker on the dev server: every endpoint and
outcome, anti-enumeration, idempotency keys, staff auth, rate limits and ``Retry-After``, trusted
proxies, CORS, and that the password shows up in no response and no log line."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from starter.http.openapi import document
from tests.api_stack import Api, api_settings, running_api
from tests.helpers import NAME, PASSWORD, nothing_started, wait_for_state
from tests.stack import Stack
from workflows.models import RegistrationState

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with running_api(stack) as running:
        yield running


def new_email() -> str:
    return f"api-{uuid.uuid4().hex[:12]}@example.com"


def registration(email: str, **extra: Any) -> dict[str, Any]:
    return {"email": email, "name": NAME, "password": PASSWORD, **extra}


async def registered(api: Api, http: httpx.AsyncClient, email: str) -> None:
    answer = await http.post("/v1/registrations", json=registration(email))
    assert answer.status_code == 202, answer.text
    await wait_for_state(api.stack, email, RegistrationState.PENDING)


def assert_problem(answer: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    body: dict[str, Any] = answer.json()
    assert body["type"] == f"urn:registration:problem:{name}"
    assert body["status"] == status
    return body


async def test_the_whole_flow_over_http(api: Api) -> None:
    email = new_email()
    async with api.client() as http:
        await registered(api, http, email)
        wrong = await http.post("/v1/activations", json={"email": email, "code": "000000"})
        if api.stack.code_for(email) == "000000":  # one in a million
            return
        body = assert_problem(wrong, 422, "invalid-code")
        assert body["attempts_left"] == api.stack.settings.max_attempts_per_code - 1
        code = api.stack.code_for(email)
        right = await http.post("/v1/activations", json={"email": email, "code": code})
        assert right.status_code == 200, right.text
        assert right.json() == {"outcome": "activated"}
        status = await http.get(f"/v1/staff/registrations/{email}", headers=api.staff)
        assert status.status_code == 200
        assert status.json()["state"] in ("active", "activating")
        again = await http.post("/v1/activations", json={"email": email, "code": code})
        assert again.status_code in (200, 409), again.text


async def test_an_address_with_an_account_gets_the_same_answer(api: Api) -> None:
    email = new_email()
    async with api.client() as http:
        await registered(api, http, email)
        await api.stack.registrations.submit_code(email, api.stack.code_for(email))
        await wait_for_state(api.stack, email, RegistrationState.ACTIVE)
        first = await http.post("/v1/registrations", json=registration(new_email()))
        existing = await http.post("/v1/registrations", json=registration(email))
    assert (existing.status_code, existing.content) == (first.status_code, first.content)
    assert existing.headers["content-type"] == first.headers["content-type"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (registration("not-an-email"), "email"),
        (registration("{email}", password="short"), "password"),
        (registration("{email}", surprise=1), "surprise"),
        (registration("{email}", phone="call me"), "phone"),
        (registration("{email}", locale="!!"), "locale"),
        ({"email": "{email}", "name": NAME}, "password"),
        (registration("{email}", profile={"k": 1}), "profile.k"),
    ],
)
async def test_invalid_input_names_the_field_and_starts_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    email = new_email()
    sent = json.loads(json.dumps(body).replace("{email}", email))
    async with api.client() as http:
        answer = await http.post("/v1/registrations", json=sent)
    problem = assert_problem(answer, 400, "invalid-input")
    assert problem["field"] == field
    assert PASSWORD not in answer.text and "short" not in problem["detail"].split(":")[-1]
    assert await nothing_started(api.stack, email)


async def test_bodies_that_are_not_json_or_too_large_are_refused(api: Api) -> None:
    async with api.client() as http:
        garbage = await http.post(
            "/v1/registrations", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert_problem(garbage, 400, "invalid-input")
        large = await http.post(
            "/v1/registrations", json=registration(new_email(), name="x" * 20000)
        )
        assert_problem(large, 413, "body-too-large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(40):
                yield b" " * 1000

        chunked = await http.post(
            "/v1/activations", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert_problem(chunked, 413, "body-too-large")
        missing = await http.get("/v1/nothing-here")
        assert_problem(missing, 404, "not-found")


async def test_activation_and_resend_for_nothing_pending(api: Api) -> None:
    async with api.client() as http:
        unknown = await http.post("/v1/activations", json={"email": new_email(), "code": "123456"})
        assert_problem(unknown, 409, "not-pending")
        resend = await http.post("/v1/resends", json={"email": new_email()})
        assert_problem(resend, 409, "not-pending")
        bad_code = await http.post("/v1/activations", json={"email": new_email(), "code": "x"})
        assert assert_problem(bad_code, 400, "invalid-input")["field"] == "code"


async def test_an_idempotency_key_answers_a_retry_without_a_second_attempt(api: Api) -> None:
    email = new_email()
    key = str(uuid.uuid4())
    wrong = {"email": email, "code": "000000"}
    async with api.client() as http:
        await registered(api, http, email)
        if api.stack.code_for(email) == "000000":
            return
        headers = {"Idempotency-Key": key}
        first = await http.post("/v1/activations", json=wrong, headers=headers)
        retry = await http.post("/v1/activations", json=wrong, headers=headers)
        other = await http.post("/v1/activations", json=wrong)
    assert first.json()["attempts_left"] == retry.json()["attempts_left"]
    assert other.json()["attempts_left"] == first.json()["attempts_left"] - 1


async def test_resend_then_the_throttle_with_retry_after(api: Api) -> None:
    email = new_email()
    async with api.client() as http:
        await registered(api, http, email)
        throttled = await http.post("/v1/resends", json={"email": email})
    body = assert_problem(throttled, 429, "resend-throttled")
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert body["outcome"] == "throttled"


async def test_staff_endpoints_need_the_right_token(api: Api) -> None:
    email = new_email()
    url = f"/v1/staff/registrations/{email}"
    async with api.client() as http:
        await registered(api, http, email)
        missing = await http.get(url)
        wrong = await http.get(url, headers={"Authorization": "Bearer not-the-token"})
        basic = await http.get(url, headers={"Authorization": "Basic c3RhZmY6c3RhZmY="})
        for answer in (missing, wrong, basic):
            assert_problem(answer, 401, "unauthorized")
            assert answer.headers["WWW-Authenticate"] == "Bearer"
        right = await http.get(url, headers=api.staff)
        assert right.status_code == 200 and right.json()["state"] == "pending"
        resent = await http.post(f"{url}/resend", headers=api.staff)
        assert resent.status_code in (202, 429), resent.text
        approved = await http.post(
            f"{url}/approve", json={"operator": "ops", "reason": "ticket 1"}, headers=api.staff
        )
        assert approved.status_code == 202 and approved.json() == {"action": "approve"}
        await wait_for_state(api.stack, email, RegistrationState.ACTIVE)
        cancel = await http.post(f"{url}/cancel", json={"reason": "late"}, headers=api.staff)
        assert assert_problem(cancel, 409, "not-pending")["state"] == "active"
        unknown = await http.get(f"/v1/staff/registrations/{new_email()}", headers=api.staff)
        assert_problem(unknown, 404, "unknown-registration")


async def test_staff_cancel(api: Api) -> None:
    email = new_email()
    url = f"/v1/staff/registrations/{email}"
    async with api.client() as http:
        await registered(api, http, email)
        cancel = await http.post(f"{url}/cancel", json={"reason": "spam"}, headers=api.staff)
        assert cancel.status_code == 202, cancel.text
        approve = await http.post(
            f"{url}/approve", json={"operator": "ops", "reason": "x"}, headers=api.staff
        )
        assert_problem(approve, 409, "not-pending")


async def test_without_a_configured_token_staff_endpoints_refuse_everything(stack: Stack) -> None:
    async with running_api(stack, api_staff_token=None) as api, api.client() as http:
        answer = await http.get(f"/v1/staff/registrations/{new_email()}", headers=api.staff)
    assert_problem(answer, 401, "unauthorized")


async def test_rate_limit_per_address_with_retry_after(stack: Stack) -> None:
    async with running_api(stack, api_rate_limit_per_address="2/minute") as api:
        async with api.client() as http:
            answers = [
                await http.post("/v1/registrations", json=registration(new_email()))
                for _ in range(3)
            ]
            other_action = await http.post("/v1/resends", json={"email": new_email()})
    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert_problem(answers[2], 429, "rate-limited")
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    assert other_action.status_code == 409  # counted on its own


async def test_rate_limit_per_email_whatever_the_address(stack: Stack) -> None:
    email = new_email()
    async with running_api(
        stack, api_rate_limit_per_email="2/minute", api_trusted_proxies='["127.0.0.1"]'
    ) as api:
        async with api.client() as http:
            answers = [
                await http.post(
                    "/v1/activations",
                    json={"email": email, "code": "123456"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                )
                for n in range(3)
            ]
    assert [answer.status_code for answer in answers] == [409, 409, 429]
    assert "email" in answers[2].json()["detail"]


async def test_forwarded_for_counts_only_from_a_trusted_proxy(stack: Stack) -> None:
    async def statuses(api: Api) -> list[int]:
        async with api.client() as http:
            return [
                (
                    await http.post(
                        "/v1/resends",
                        json={"email": new_email()},
                        headers={"X-Forwarded-For": f"198.51.100.7, 203.0.113.{n}"},
                    )
                ).status_code
                for n in range(3)
            ]

    async with running_api(
        stack, api_rate_limit_per_address="2/minute", api_trusted_proxies='["127.0.0.0/8"]'
    ) as trusting:
        assert await statuses(trusting) == [409, 409, 409]  # three clients behind the proxy
    async with running_api(stack, api_rate_limit_per_address="2/minute") as untrusting:
        assert await statuses(untrusting) == [409, 409, 429]  # one peer, whatever it claims


async def test_cors_preflight_for_configured_origins_only(stack: Stack) -> None:
    shop = "https://shop.example"
    async with running_api(stack, api_cors_origins=f'["{shop}"]') as api:
        async with api.client() as http:
            headers = {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,idempotency-key",
            }
            allowed = await http.options("/v1/activations", headers={"Origin": shop, **headers})
            refused = await http.options(
                "/v1/activations", headers={"Origin": "https://evil.example", **headers}
            )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == shop
    assert "idempotency-key" in allowed.headers["access-control-allow-headers"].lower()
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


async def test_health_and_readiness(api: Api, stack: Stack) -> None:
    async with api.client() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
    async with running_api(stack, task_queue=f"nobody-{uuid.uuid4()}") as lonely:
        async with lonely.client() as http:
            not_ready = await http.get("/readyz")
    assert "no worker" in assert_problem(not_ready, 503, "unavailable")["detail"]


async def test_the_password_is_in_no_response_and_no_log_line(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Unlogged-Secret-Passphrase-42"
    email = new_email()
    caplog.set_level(logging.DEBUG)
    async with api.client() as http:
        answers = [
            await http.post("/v1/registrations", json=registration(email, password=secret)),
            await http.post(
                "/v1/registrations", json=registration("bad", password=secret, x=secret)
            ),
            await http.post(
                f"/v1/registrations?password={secret}", json=registration(email, password=secret)
            ),
        ]
    for answer in answers:
        assert secret not in answer.text
    assert secret not in caplog.text
    assert any(record.name == "starter.http.access" for record in caplog.records)


def test_the_committed_openapi_document_is_current() -> None:
    committed = Path(__file__).parent.parent / "docs" / "openapi.json"
    assert committed.read_text(encoding="utf-8") == document(), (
        "run: python -m starter.http.openapi > docs/openapi.json"
    )


def test_settings_reach_the_api(stack: Stack) -> None:
    settings = api_settings(stack, api_trusted_proxies='["10.0.0.0/8", "::1"]')
    assert [str(network) for network in settings.api_trusted_proxies] == ["10.0.0.0/8", "::1/128"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "REGISTRATION_API_RATE_LIMIT_PER_ADDRESS",
            "lots",
            "REGISTRATION_API_RATE_LIMIT_PER_ADDRESS",
        ),
        (
            "REGISTRATION_API_TRUSTED_PROXIES",
            '["not-an-address"]',
            "REGISTRATION_API_TRUSTED_PROXIES",
        ),
        ("REGISTRATION_API_STAFF_TOKEN", "short", "REGISTRATION_API_STAFF_TOKEN"),
        ("REGISTRATION_API_PROT", "8000", "did you mean REGISTRATION_API_PORT"),
    ],
)
def test_api_settings_are_checked_by_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str, message: str
) -> None:
    from common.settings import InvalidSettings, load_settings

    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv(variable, value)
    for prefixes in (None, ("REGISTRATION_HANTERA_",)):  # the API's check and the worker's
        with pytest.raises(InvalidSettings, match=message):
            load_settings(prefixes)
