"""The hosted pages over real HTTP, as a browser without JavaScript uses them (forms posted with
their CSRF token and cookie), in front of a worker on the dev server: the whole flow, a wrong
code's attempts left, link mode's confirm button (a GET never activates), CSRF refusals, errors
beside their field, the password never echoed, languages, and catalogs in step with the
templates. tests/browser/ drives the same pages in Chromium."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from babel.dates import format_timedelta
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from pydantic import ValidationError

from common.i18n import SUPPORTED
from common.settings import Settings
from starter.http import pages as pages_module
from starter.http.i18n import LANGUAGES, choose, from_accept_language
from starter.http.pages import on_accent
from tests.api_stack import Api, running_api
from tests.helpers import NAME, PASSWORD, nothing_started, wait_for_state
from tests.outbox import latest_token, messages_to
from tests.stack import Stack, beside
from workflows.models import RegistrationState

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
FORM_ID = re.compile(r'name="form_id" value="([^"]+)"')
HTTP = Path(pages_module.__file__).parent


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with running_api(stack) as running:
        yield running


def new_email() -> str:
    return f"page-{uuid.uuid4().hex[:12]}@example.com"


def token_of(page: httpx.Response) -> dict[str, str]:
    found = CSRF.search(page.text)
    assert found, page.text
    fields = {"csrf_token": found.group(1)}
    form_id = FORM_ID.search(page.text)
    if form_id:
        fields["form_id"] = form_id.group(1)
    return fields


async def register_on_page(http: httpx.AsyncClient, email: str) -> httpx.Response:
    page = await http.get("/register")
    assert page.status_code == 200
    return await http.post(
        "/register", data={**token_of(page), "name": NAME, "email": email, "password": PASSWORD}
    )


async def test_register_and_activate_on_the_pages(api: Api) -> None:
    email = new_email()
    async with api.client() as http:
        sent = await register_on_page(http, email)
        assert sent.status_code == 303
        assert sent.headers["location"].startswith("/activate?")
        await wait_for_state(api.stack, email, RegistrationState.PENDING)
        page = await http.get(sent.headers["location"])
        assert page.status_code == 200 and email in page.text
        lifetime = format_timedelta(api.stack.settings.activation_ttl, locale="en")
        assert f"valid for {lifetime}" in page.text
        code = api.stack.code_for(email)
        wrong = "000001" if code != "000001" else "000002"
        answer = await http.post(
            "/activate", data={**token_of(page), "email": email, "code": wrong}
        )
        assert answer.status_code == 422
        left = api.stack.settings.max_attempts_per_code - 1
        assert f"Attempts left: {left}." in answer.text
        assert 'aria-describedby="code-hint code-error"' in answer.text
        assert 'id="code-error"' in answer.text
        right = await http.post(
            "/activate", data={**token_of(answer), "email": email, "code": code}
        )
        assert right.status_code == 303
        done = await http.get(right.headers["location"])
    assert done.status_code == 200
    assert "Your account is active" in done.text
    assert 'href="http://localhost:8000/login"' in done.text
    await wait_for_state(api.stack, email, RegistrationState.ACTIVE)


async def test_a_form_without_its_csrf_token_starts_nothing(api: Api) -> None:
    email = new_email()
    fields = {"name": NAME, "email": email, "password": PASSWORD}
    async with api.client() as http:
        page = await http.get("/register")
        token = token_of(page)["csrf_token"]
        missing = await http.post("/register", data=fields)
        forged = await http.post("/register", data={**fields, "csrf_token": token + "x"})
    async with api.client() as other:  # a token without the cookie it was made for
        foreign = await other.post("/register", data={**fields, "csrf_token": token})
    for answer in (missing, forged, foreign):
        assert answer.status_code == 403
        assert "This form has expired" in answer.text
        assert PASSWORD not in answer.text
    assert await nothing_started(api.stack, email)


async def test_an_error_shows_beside_its_field_and_the_password_is_not_echoed(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    email = new_email()
    async with api.client() as http:
        page = await http.get("/register")
        answer = await http.post(
            "/register",
            data={**token_of(page), "name": NAME, "email": email, "password": "password123"},
        )
    assert answer.status_code == 400
    assert 'aria-describedby="password-hint password-error"' in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert "commonly used" in answer.text
    assert "password123" not in answer.text and "password123" not in caplog.text
    assert f'value="{email}"' in answer.text  # the other fields are kept
    assert await nothing_started(api.stack, email)


async def test_the_link_opens_a_confirm_page_and_only_its_post_activates(stack: Stack) -> None:
    email = new_email()
    base = {"activation_link_base": "https://shop.example/activate/link"}
    async for linked in beside(stack, "pagelink", settings=base):
        await linked.registrations.register(email=email, name=NAME, password=PASSWORD)
        await wait_for_state(linked, email, RegistrationState.PENDING)
        token = latest_token(linked.settings.outbox_path, email)
        async with running_api(linked) as api, api.client() as http:
            page = await http.get("/activate/link", params={"email": email, "token": token})
            assert page.status_code == 200
            assert "Confirm and activate" in page.text
            assert page.headers["referrer-policy"] == "no-referrer"
            again = await http.get("/activate/link", params={"email": email, "token": token})
            assert again.status_code == 200
            status = await linked.registrations.status(email)
            assert status.state is RegistrationState.PENDING  # GETs never activate
            confirmed = await http.post(
                "/activate/link", data={**token_of(page), "email": email, "token": token}
            )
            assert confirmed.status_code == 303, confirmed.text
        await wait_for_state(linked, email, RegistrationState.ACTIVE)


async def test_a_swedish_registration_gets_swedish_mails_and_its_link_a_swedish_page(
    stack: Stack,
) -> None:
    """The registration's locale (``sv-SE``) picks the mails' language, and the mailed link
    carries it (``lang=sv``) to the confirm page, whatever the browser asks for."""
    email = new_email()
    base = {"activation_link_base": "https://shop.example/activate/link"}
    async for linked in beside(stack, "pagesv", settings=base):
        shop = linked.settings.shop_name
        await linked.registrations.register(
            email=email, name=NAME, password=PASSWORD, locale="sv-SE"
        )
        await wait_for_state(linked, email, RegistrationState.PENDING)
        (mail,) = messages_to(linked.settings.outbox_path, email)
        assert mail["Subject"] == f"Din aktiveringskod för {shop}"
        text = mail.get_body(preferencelist=("plain",))
        html = mail.get_body(preferencelist=("html",))
        assert text is not None and html is not None
        assert f"Hej {NAME}," in text.get_content() and "Ange den här koden" in text.get_content()
        assert '<html lang="sv">' in html.get_content()
        assert "Aktivera mitt konto" in html.get_content()
        (link,) = re.findall(r"https://shop\.example/activate/link\?\S+", text.get_content())
        query = urlsplit(link).query
        assert parse_qs(query)["lang"] == ["sv"]
        async with running_api(linked) as api, api.client() as http:
            page = await http.get(f"/activate/link?{query}", headers={"Accept-Language": "de"})
            assert '<html lang="sv">' in page.text and "Bekräfta och aktivera" in page.text
            confirmed = await http.post(
                "/activate/link",
                data={**token_of(page), **{k: v[0] for k, v in parse_qs(query).items()}},
            )
            assert confirmed.status_code == 303, confirmed.text
        await wait_for_state(linked, email, RegistrationState.ACTIVE)
        welcome = messages_to(linked.settings.outbox_path, email)[-1]
        assert welcome["Subject"] == f"Välkommen till {shop}"


async def test_a_registration_on_a_german_page_gets_a_german_mail(api: Api) -> None:
    email = new_email()
    async with api.client() as http:
        page = await http.get("/register", params={"lang": "de"})
        sent = await http.post(
            "/register",
            data={
                **token_of(page),
                "name": NAME,
                "email": email,
                "password": PASSWORD,
                "lang": "de",
            },
        )
        assert sent.status_code == 303
    await wait_for_state(api.stack, email, RegistrationState.PENDING)
    (mail,) = messages_to(api.stack.settings.outbox_path, email)
    assert mail["Subject"] == f"Ihr Aktivierungscode für {api.stack.settings.shop_name}"
    text = mail.get_body(preferencelist=("plain",))
    assert text is not None and "Geben Sie diesen Code ein" in text.get_content()


async def test_a_resend_from_the_page_says_how_many_are_left(api: Api) -> None:
    email = new_email()
    async with api.client() as http:
        await register_on_page(http, email)
        await wait_for_state(api.stack, email, RegistrationState.PENDING)
        page = await http.get("/activate", params={"email": email})
        answer = await http.post("/activate/resend", data={**token_of(page), "resend-email": email})
    # The first code was sent a moment ago: the throttle answers, beside the resend field.
    assert answer.status_code == 429
    assert 'aria-describedby="resend-email-error"' in answer.text
    assert "A code was sent a moment ago" in answer.text


async def test_the_page_language_follows_the_request(api: Api) -> None:
    async with api.client() as http:
        swedish = await http.get("/register", headers={"Accept-Language": "sv-SE,sv;q=0.9"})
        german = await http.get("/activate?lang=de", headers={"Accept-Language": "sv"})
        other = await http.get("/register", headers={"Accept-Language": "fr-FR"})
    assert '<html lang="sv">' in swedish.text and "Skapa ett konto" in swedish.text
    assert '<html lang="de">' in german.text and "Aktivieren Sie Ihr Konto" in german.text
    assert '<html lang="en">' in other.text and "Create an account" in other.text


def test_accept_language_weights() -> None:
    assert from_accept_language("fr;q=1, de;q=0.5, sv;q=0.8") == "sv"
    assert from_accept_language("de-AT, sv") == "de"
    assert from_accept_language("sv;q=0, fr") is None
    assert from_accept_language("sv;q=abc, de") == "de"
    assert choose("sv_SE", "de") == "sv"
    assert choose("xx", None) == "en"
    assert tuple(LANGUAGES) == SUPPORTED  # the switcher names every language the mails have


def test_the_catalogs_hold_every_message_of_the_pages() -> None:
    method_map = [("pages.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    extracted = {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(HTTP, method_map, options)
    }
    assert extracted
    for language in ("sv", "de"):
        path = HTTP / "locales" / language / "LC_MESSAGES" / "pages.po"
        with path.open("rb") as file:
            catalog = read_po(file)
        ids = {message.id for message in catalog if message.id}
        assert ids == extracted, f"{path}: run pybabel update (docs/api.md, Translations)"
        for message in catalog:
            if message.id:
                assert message.string, f"{language}: no translation of {message.id!r}"
                assert not message.fuzzy, f"{language}: fuzzy {message.id!r}"
                placeholders = set(re.findall(r"%\((\w+)\)s", str(message.id)))
                assert set(re.findall(r"%\((\w+)\)s", str(message.string))) == placeholders


def test_theme_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="api_accent_color"):
        Settings(_env_file=None, api_accent_color="red; background: url(x)")
    with pytest.raises(ValidationError, match="api_logo_url"):
        Settings(_env_file=None, api_logo_url="javascript:alert(1)")
    with pytest.raises(ValidationError, match="api_csrf_key"):
        Settings(_env_file=None, api_csrf_key="short")
    assert on_accent("#1f5fbf") == "#ffffff"
    assert on_accent("#ffcc00") == "#000000"
