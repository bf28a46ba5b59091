"""The hosted pages in a real browser: Playwright driving Debian's Chromium (``/usr/bin/chromium``,
installed by .ci/run; no browser is ever downloaded), against the API over real HTTP and a worker
on the dev server. Register, read the code from the outbox, activate; a wrong code's attempts
left; the link's confirm click; a keyboard-only pass; every page in Swedish and German; and
axe-core (from npm, ``npm ci`` in this folder) finding no serious or critical violation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.api_stack import Api, running_api
from tests.helpers import NAME, PASSWORD, wait_for_state
from tests.outbox import latest_token
from tests.stack import Stack, beside
from workflows.models import RegistrationState

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).parent / "node_modules" / "axe-core" / "axe.min.js"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no /usr/bin/chromium: install Debian's chromium package (.ci/run does)",
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with running_api(stack) as running:
        yield running


async def context_for(browser: Browser, locale: str = "en-US", **options: Any) -> BrowserContext:
    context = await browser.new_context(locale=locale, **options)
    context.set_default_timeout(30_000)
    return context


def new_email() -> str:
    return f"browser-{uuid.uuid4().hex[:12]}@example.com"


async def register(page: Page, api: Api, email: str) -> None:
    await page.goto(f"{api.url}/register")
    await page.get_by_label("Name").fill(NAME)
    await page.get_by_label("Email address").fill(email)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page).to_have_url(
        f"{api.url}/activate?email={email.replace('@', '%40')}&lang=en&sent=1"
    )
    await wait_for_state(api.stack, email, RegistrationState.PENDING)


async def test_register_activate_and_see_the_result(browser: Browser, api: Api) -> None:
    email = new_email()
    context = await context_for(browser)
    page = await context.new_page()
    await register(page, api, email)
    code = api.stack.code_for(email)
    await page.get_by_label("Code").fill("000001" if code != "000001" else "000002")
    await page.get_by_role("button", name="Activate account").click()
    left = api.stack.settings.max_attempts_per_code - 1
    await expect(page.locator("#code-error")).to_have_text(
        f"The code is not right. Attempts left: {left}."
    )
    await expect(page.get_by_label("Code")).to_have_attribute("aria-invalid", "true")
    await page.get_by_label("Code").fill(code)
    await page.get_by_role("button", name="Activate account").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your account is active")
    link = page.get_by_role("link", name="Sign in to Our shop")
    await expect(link).to_have_attribute("href", "http://localhost:8000/login")
    await wait_for_state(api.stack, email, RegistrationState.ACTIVE)
    await context.close()


async def test_the_password_toggle_is_an_enhancement(browser: Browser, api: Api) -> None:
    context = await context_for(browser)
    page = await context.new_page()
    await page.goto(f"{api.url}/register")
    password = page.get_by_label("Password", exact=True)
    await expect(password).to_have_attribute("type", "password")
    await page.get_by_role("button", name="Show password").click()
    await expect(password).to_have_attribute("type", "text")
    await page.get_by_role("button", name="Hide password").click()
    await expect(password).to_have_attribute("type", "password")
    await context.close()
    without_js = await context_for(browser, java_script_enabled=False)
    page = await without_js.new_page()
    await page.goto(f"{api.url}/register")
    await expect(page.get_by_label("Password", exact=True)).to_have_attribute("type", "password")
    await expect(page.get_by_role("button", name="Show password")).to_have_count(0)
    await without_js.close()


async def test_the_link_needs_the_confirm_click(browser: Browser, stack: Stack) -> None:
    email = new_email()
    base = {"activation_link_base": "https://shop.example/activate/link"}
    async for linked in beside(stack, "browserlink", settings=base):
        await linked.registrations.register(email=email, name=NAME, password=PASSWORD)
        await wait_for_state(linked, email, RegistrationState.PENDING)
        token = latest_token(linked.settings.outbox_path, email)
        async with running_api(linked) as api:
            context = await context_for(browser)
            page = await context.new_page()
            await page.goto(f"{api.url}/activate/link?email={email}&token={token}")
            await page.reload()
            status = await linked.registrations.status(email)
            assert status.state is RegistrationState.PENDING  # opening the link is not enough
            await page.get_by_role("button", name="Confirm and activate").click()
            await expect(page.get_by_role("heading", level=1)).to_have_text(
                "Your account is active"
            )
            await context.close()
        await wait_for_state(linked, email, RegistrationState.ACTIVE)


async def test_keyboard_only(browser: Browser, api: Api) -> None:
    email = new_email()
    context = await context_for(browser)
    page = await context.new_page()
    await page.goto(f"{api.url}/register")
    keyboard = page.keyboard
    await keyboard.press("Tab")
    await expect(page.get_by_label("Name")).to_be_focused()
    await keyboard.type(NAME)
    await keyboard.press("Tab")
    await expect(page.get_by_label("Email address")).to_be_focused()
    await keyboard.type(email)
    await keyboard.press("Tab")
    await expect(page.get_by_label("Password", exact=True)).to_be_focused()
    await keyboard.type(PASSWORD)
    await keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Show password")).to_be_focused()
    await keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Create account")).to_be_focused()
    await keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Activate your account")
    await wait_for_state(api.stack, email, RegistrationState.PENDING)
    await keyboard.press("Tab")
    await expect(page.get_by_label("Email address").first).to_be_focused()
    await keyboard.press("Tab")
    await expect(page.get_by_label("Code")).to_be_focused()
    await keyboard.type(api.stack.code_for(email))
    await keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your account is active")
    await keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Sign in to Our shop")).to_be_focused()
    await context.close()


PAGES_IN = {
    "sv": (
        "Skapa ett konto",
        "Aktivera ditt konto",
        "Bekräfta din e-postadress",
        "Ditt konto är aktivt",
    ),
    "de": (
        "Konto erstellen",
        "Aktivieren Sie Ihr Konto",
        "Bestätigen Sie Ihre E-Mail-Adresse",
        "Ihr Konto ist aktiv",
    ),
}


@pytest.mark.parametrize("language", ["sv", "de"])
async def test_each_page_in_the_browsers_language(
    browser: Browser, api: Api, language: str
) -> None:
    context = await context_for(browser, locale={"sv": "sv-SE", "de": "de-DE"}[language])
    page = await context.new_page()
    paths = ("/register", "/activate", "/activate/link?email=a%40example.com&token=x", "/activated")
    for path, heading in zip(paths, PAGES_IN[language], strict=True):
        await page.goto(f"{api.url}{path}")
        await expect(page.locator("html")).to_have_attribute("lang", language)
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    # A form's errors come back in the page's language too.
    await page.goto(f"{api.url}/register")
    await page.locator("form button[type=submit]").click()
    await expect(page.locator("#name-error")).to_have_text(
        {"sv": "Ange ditt namn.", "de": "Geben Sie Ihren Namen ein."}[language]
    )
    await context.close()


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [
        {"id": found["id"], "impact": found["impact"], "nodes": [n["html"] for n in found["nodes"]]}
        for found in result
        if found["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("language", ["en", "sv", "de"])
async def test_no_serious_accessibility_violations(
    browser: Browser, api: Api, language: str
) -> None:
    assert AXE.is_file(), f"{AXE} is missing: run `npm ci` in {AXE.parents[2]}"
    # axe is injected as a script of the test's own: the pages' CSP would refuse it otherwise.
    context = await context_for(browser, locale=language, bypass_csp=True)
    page = await context.new_page()
    found: dict[str, list[dict[str, Any]]] = {}
    for path in ("/register", "/activate?email=a%40example.com&sent=1", "/activated",
                 "/activate/link?email=a%40example.com&token=x"):  # fmt: skip
        await page.goto(
            f"{api.url}{path}?lang={language}"
            if "?" not in path
            else f"{api.url}{path}&lang={language}"
        )
        found[path] = await axe_violations(page)
    # Pages with errors beside their fields.
    await page.goto(f"{api.url}/register?lang={language}")
    await page.locator("form button[type=submit]").click()
    await expect(page.locator("#name-error")).to_be_visible()
    found["/register with errors"] = await axe_violations(page)
    for width in (360, 1280):  # a phone and a desktop
        await page.set_viewport_size({"width": width, "height": 800})
        found[f"/register at {width}px"] = await axe_violations(page)
    await context.close()
    assert not any(found.values()), found
