"""The hosted pages: ``/register``, ``/activate`` (code entry and resend), the mailed link's
confirm page (``/activate/link``) and the result page (``/activated``), server-rendered with
Jinja2 and working without JavaScript.

They call the same ``RegistrationClient`` and the same rate limits as the JSON API, so limits,
idempotency and anti-enumeration are the API's. A GET never activates: the link's page only
shows a button whose POST does (mail scanners fetch links and would burn the token).

Every form carries a CSRF token: a signed double submit. A random value lives in a cookie
(``HttpOnly``, ``SameSite=Lax``); the form carries it signed with ``REGISTRATION_API_CSRF_KEY``
(itsdangerous, with a timestamp); a POST is taken only when the signature holds, is younger
than a day and names the cookie's value. A site elsewhere can neither read the cookie nor make
the signature. The password is never put back into a page, logged or kept.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel.dates import format_timedelta
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from itsdangerous import BadData, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from limits.errors import StorageError

from common.settings import Settings
from starter.client import (
    Busy,
    InvalidInput,
    NoWorkerAnswered,
    RegistrationClient,
    ServerUnreachable,
    UnknownRegistration,
)
from starter.http.backend import Backend
from starter.http.i18n import LANGUAGES, choose, translations
from starter.http.limiting import Refused
from workflows.models import ActivationOutcome, ActivationReply, ResendOutcome

log = logging.getLogger("starter.http.pages")

HERE = Path(__file__).parent
STATIC = HERE / "static"
CSRF_COOKIE = "registration_csrf"
CSRF_MAX_AGE = 24 * 3600
"""Seconds a rendered form stays good: a customer may leave the code page open for a while."""
OverLimit = Callable[[Request, str, str, RegistrationClient], Awaitable[Refused | None]]


class _Unavailable(Exception):
    """The service cannot answer now (Temporal, a worker, the limits' storage)."""


@cache
def environment(language: str) -> Environment:
    """The templates with ``language``'s catalog installed (one environment per language)."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
    return env


def on_accent(accent: str) -> str:
    """Black or white text on ``accent`` (``#rrggbb``), whichever has more contrast (WCAG 2.x
    relative luminance)."""

    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    red, green, blue = (int(accent[i : i + 2], 16) for i in (1, 3, 5))
    luminance = 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)
    return "#000000" if (luminance + 0.05) / 0.05 > 1.05 / (luminance + 0.05) else "#ffffff"


@dataclass
class Form:
    """What a page shows back: entered values (never the password), errors by field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    form_error: str | None = None
    notice: str | None = None


class Pages:
    def __init__(self, settings: Settings, backend: Backend, over_limit: OverLimit) -> None:
        self._settings = settings
        self._backend = backend
        self._over_limit = over_limit
        key = settings.api_csrf_key.get_secret_value() if settings.api_csrf_key else None
        secret = key or secrets.token_urlsafe(32)
        self._csrf = URLSafeTimedSerializer(secret, salt="registration-pages-csrf")
        self._form_ids = URLSafeTimedSerializer(secret, salt="registration-pages-form-id")

    # Rendering.

    def render(
        self,
        request: Request,
        template: str,
        language: str,
        title: str,
        here: tuple[str, Mapping[str, str]],
        status: int = 200,
        form: Form | None = None,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        settings = self._settings
        form = form or Form()
        cookie = request.cookies.get(CSRF_COOKIE)
        new_cookie = None
        if not cookie or not 32 <= len(cookie) <= 64:
            cookie = new_cookie = secrets.token_urlsafe(32)
        nonce = secrets.token_urlsafe(16)
        path, parameters = here
        links = [
            (code, label, f"{path}?{urlencode({**parameters, 'lang': code})}")
            for code, label in LANGUAGES.items()
        ]
        html = (
            environment(language)
            .get_template(template)
            .render(
                language=language,
                title=title,
                shop_name=settings.shop_name,
                logo_url=str(settings.api_logo_url) if settings.api_logo_url else None,
                accent=settings.api_accent_color,
                on_accent=on_accent(settings.api_accent_color),
                nonce=nonce,
                csrf=self._csrf.dumps(cookie),
                form_id=self._form_ids.dumps(uuid.uuid4().hex),
                language_links=links,
                values=form.values,
                errors=form.errors,
                form_error=form.form_error,
                notice=form.notice,
                register_url=f"/register?{urlencode({'lang': language})}",
                activate_url=f"/activate?{urlencode({'lang': language})}",
                login_url=str(settings.api_login_url),
                **context,
            )
        )
        response = HTMLResponse(html, status_code=status, headers=dict(headers or {}))
        response.headers.update(_security_headers(nonce))
        if new_cookie is not None:
            response.set_cookie(
                CSRF_COOKIE,
                new_cookie,
                max_age=CSRF_MAX_AGE,
                path="/",
                secure=request.url.scheme == "https",
                httponly=True,
                samesite="lax",
            )
        return response

    def result(
        self,
        request: Request,
        language: str,
        title: str,
        message: str,
        status: int,
        next_url: str | None = None,
        next_label: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        return self.render(
            request,
            "result.html",
            language,
            title,
            ("/activated", {}),
            status=status,
            headers=headers,
            message=message,
            problem=next_url is not None,
            next_url=next_url,
            next_label=next_label,
        )

    def unavailable(self, request: Request, language: str) -> HTMLResponse:
        _ = translations(language).gettext
        return self.result(
            request,
            language,
            _("Please try again"),
            _("We cannot take your request right now. Please try again in a moment."),
            503,
            next_url=str(request.url.path),
            next_label=_("Back"),
            headers={"Retry-After": "5"},
        )

    # Form checks.

    def csrf_holds(self, request: Request, token: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE)
        if not cookie or not token:
            return False
        try:
            value = self._csrf.loads(token, max_age=CSRF_MAX_AGE)
        except BadData:
            return False
        return isinstance(value, str) and secrets.compare_digest(value, cookie)

    def request_id(self, form_id: str) -> str | None:
        """The ``request_id`` of a submitted form: the id made when the form was rendered, so a
        form sent twice (a double click, a reload that posts again) counts once."""
        try:
            value = self._form_ids.loads(form_id, max_age=CSRF_MAX_AGE)
        except BadData:
            return None
        return f"page-{value}" if isinstance(value, str) else None

    async def limited(
        self, request: Request, action: str, email: str, registrations: RegistrationClient
    ) -> Refused | None:
        try:
            return await self._over_limit(request, action, email, registrations)
        except StorageError as err:
            log.warning("the rate limits' storage failed: %s", err.storage_error)
            raise _Unavailable from None

    async def registrations(self) -> RegistrationClient:
        try:
            return await self._backend.registrations()
        except ServerUnreachable:
            raise _Unavailable from None


def _security_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; "
            f"style-src 'self' 'nonce-{nonce}'; img-src 'self' https: http:; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        ),
        # The link's page has its token in its address: no other site is told the address.
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-store",
    }


async def _form(request: Request) -> dict[str, str]:
    """The posted fields (text only; an uploaded file reads as empty)."""
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


def _password_error(detail: str, language: str, minimum: int, maximum: int) -> str:
    _ = translations(language).gettext
    if "at least" in detail:
        return _("Use at least %(min)s characters.") % {"min": minimum}
    if "at most" in detail:
        return _("Use at most %(max)s characters.") % {"max": maximum}
    if "commonly used" in detail:
        return _("This password is commonly used and easy to guess: choose another.")
    if "email or name" in detail:
        return _("The password must not contain your name or email address.")
    return _("This password cannot be used: choose another.")


def _field_error(field_name: str, detail: str, language: str, settings: Settings) -> str:
    _ = translations(language).gettext
    if field_name == "password":
        return _password_error(
            detail, language, settings.password_min_length, settings.password_max_length
        )
    if field_name == "email":
        return _("Enter a valid email address, like name@example.com.")
    if field_name == "name":
        return _("Enter your name (one line, up to 200 characters).")
    return _("Please check this field.")


def add_pages(app: FastAPI, settings: Settings, backend: Backend, over_limit: OverLimit) -> None:
    """The pages' routes on ``app`` (left out of the OpenAPI document: they are not the API)."""
    pages = Pages(settings, backend, over_limit)

    def language_of(request: Request, explicit: str | None = None) -> str:
        return choose(
            explicit or request.query_params.get("lang"), request.headers.get("accept-language")
        )

    def refused_page(
        request: Request,
        template: str,
        language: str,
        title: str,
        here: tuple[str, Mapping[str, str]],
        form: Form,
        refused: Refused,
        **context: Any,
    ) -> HTMLResponse:
        _ = translations(language).gettext
        minutes = max(1, round(refused.retry_after / 60))
        form.form_error = _("Too many requests. Please try again in about %(minutes)s min.") % {
            "minutes": minutes
        }
        return pages.render(
            request, template, language, title, here, status=429, form=form,
            headers={"Retry-After": str(refused.retry_after)}, **context,
        )  # fmt: skip

    def expired_form(language: str) -> str:
        _ = translations(language).gettext
        return _("This form has expired. Please send it again.")

    # /register

    def register_page(
        request: Request, language: str, form: Form | None = None, status: int = 200
    ) -> HTMLResponse:
        _ = translations(language).gettext
        return pages.render(
            request, "register.html", language, _("Create an account"), ("/register", {}),
            status=status, form=form, min_length=settings.password_min_length,
            max_length=settings.password_max_length,
        )  # fmt: skip

    @app.get("/register", include_in_schema=False, response_class=HTMLResponse)
    async def show_register(request: Request) -> Response:
        return register_page(request, language_of(request))

    @app.post("/register", include_in_schema=False, response_class=HTMLResponse)
    async def submit_register(request: Request) -> Response:
        posted = await _form(request)
        language = language_of(request, posted.get("lang"))
        _ = translations(language).gettext
        name, email = posted.get("name", "").strip(), posted.get("email", "").strip()
        password = posted.pop("password", "")
        form = Form(values={"name": name, "email": email})
        if not pages.csrf_holds(request, posted.get("csrf_token", "")):
            form.form_error = expired_form(language)
            return register_page(request, language, form, 403)
        if not name:
            form.errors["name"] = _("Enter your name.")
        if not email:
            form.errors["email"] = _("Enter your email address.")
        if not password:
            form.errors["password"] = _("Choose a password.")
        if form.errors:
            return register_page(request, language, form, 400)
        try:
            registrations = await pages.registrations()
            refused = await pages.limited(request, "start", email, registrations)
            if refused is not None:
                title = _("Create an account")
                return refused_page(
                    request, "register.html", language, title, ("/register", {}), form, refused,
                    min_length=settings.password_min_length,
                    max_length=settings.password_max_length,
                )  # fmt: skip
            await registrations.register(email=email, name=name, password=password, locale=language)
        except InvalidInput as err:
            detail = str(err).removeprefix(f"{err.field}: ")
            field_name = err.field if err.field in ("name", "email", "password") else "email"
            form.errors[field_name] = _field_error(err.field, detail, language, settings)
            return register_page(request, language, form, 400)
        except (_Unavailable, Busy, NoWorkerAnswered, ServerUnreachable):
            return pages.unavailable(request, language)
        # The same answer whether the address is new, pending or has an account.
        target = urlencode({"email": email, "lang": language, "sent": "1"})
        return RedirectResponse(f"/activate?{target}", status_code=303)

    # /activate

    def activate_page(
        request: Request, language: str, form: Form | None = None, status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:  # fmt: skip
        _ = translations(language).gettext
        form = form or Form()
        email = form.values.get("email", "")
        ttl = format_timedelta(settings.activation_ttl, locale=language)
        return pages.render(
            request, "activate.html", language, _("Activate your account"),
            ("/activate", {"email": email} if email else {}), status=status, form=form,
            headers=headers, ttl=ttl,
        )  # fmt: skip

    @app.get("/activate", include_in_schema=False, response_class=HTMLResponse)
    async def show_activate(request: Request) -> Response:
        language = language_of(request)
        _ = translations(language).gettext
        email = request.query_params.get("email", "")[:320]
        form = Form(values={"email": email})
        if email and request.query_params.get("sent"):
            form.notice = _(
                "If %(email)s can be registered, we have mailed a code to it. Check your inbox."
            ) % {"email": email}
        return activate_page(request, language, form)

    async def activation(
        request: Request, language: str, email: str, code: str, form_id: str
    ) -> ActivationReply | Refused:
        registrations = await pages.registrations()
        refused = await pages.limited(request, "activate", email, registrations)
        if refused is not None:
            return refused
        try:
            return await registrations.submit_code(
                email, code, request_id=pages.request_id(form_id)
            )
        except UnknownRegistration:
            return ActivationReply(outcome=ActivationOutcome.NOT_PENDING)

    def outcome_page(
        request: Request, language: str, email: str, reply: ActivationReply
    ) -> Response | None:
        """The page for an outcome that ends the activation; None for a wrong code (the form
        says how many attempts are left)."""
        _ = translations(language).gettext
        again = f"/register?{urlencode({'lang': language})}"
        if reply.outcome is ActivationOutcome.ACTIVATED:
            return RedirectResponse(f"/activated?{urlencode({'lang': language})}", status_code=303)
        if reply.outcome is ActivationOutcome.EXPIRED:
            return pages.result(
                request, language, _("The registration expired"),
                _("The time to activate this account has run out. Please register again."),
                410, again, _("Register again"),
            )  # fmt: skip
        if reply.outcome is ActivationOutcome.FAILED:
            return pages.result(
                request, language, _("The activation failed"),
                _("Your code was right, but the account could not be activated. Nothing was"
                  " kept: please register again."),
                409, again, _("Register again"),
            )  # fmt: skip
        if reply.outcome is ActivationOutcome.ALREADY_REGISTERED:
            return pages.result(
                request, language, _("You already have an account"),
                _("This address already has an account. We have mailed you how to sign in."),
                409, str(settings.api_login_url), _("Sign in to %(shop)s")
                % {"shop": settings.shop_name},
            )  # fmt: skip
        return None

    def code_error(language: str, reply: ActivationReply) -> tuple[str, int]:
        _ = translations(language).gettext
        if reply.outcome is ActivationOutcome.INVALID_CODE:
            left = reply.attempts_left or 0
            return _("The code is not right. Attempts left: %(left)s.") % {"left": left}, 422
        if reply.outcome is ActivationOutcome.TOO_MANY_ATTEMPTS:
            return _("No attempts are left for this code. Send yourself a new one below."), 403
        return _(
            "Nothing is waiting to be activated for this address. Check the address, or"
            " register again."
        ), 409  # fmt: skip

    @app.post("/activate", include_in_schema=False, response_class=HTMLResponse)
    async def submit_activate(request: Request) -> Response:
        posted = await _form(request)
        language = language_of(request, posted.get("lang"))
        _ = translations(language).gettext
        email, code = posted.get("email", "").strip()[:320], posted.get("code", "").strip()
        form = Form(values={"email": email})
        if not pages.csrf_holds(request, posted.get("csrf_token", "")):
            form.form_error = expired_form(language)
            return activate_page(request, language, form, 403)
        if not email:
            form.errors["email"] = _("Enter your email address.")
        if not code:
            form.errors["code"] = _("Enter the code from the mail.")
        if form.errors:
            return activate_page(request, language, form, 400)
        try:
            reply = await activation(request, language, email, code, posted.get("form_id", ""))
        except InvalidInput:
            form.errors["code"] = _("This is not a code from our mail.")
            return activate_page(request, language, form, 400)
        except (_Unavailable, Busy, NoWorkerAnswered, ServerUnreachable):
            return pages.unavailable(request, language)
        if isinstance(reply, Refused):
            return refused_page(
                request, "activate.html", language, _("Activate your account"),
                ("/activate", {"email": email}), form, reply,
                ttl=format_timedelta(settings.activation_ttl, locale=language),
            )  # fmt: skip
        page = outcome_page(request, language, email, reply)
        if page is not None:
            return page
        message, status = code_error(language, reply)
        form.errors["code"] = message
        return activate_page(request, language, form, status)

    @app.post("/activate/resend", include_in_schema=False, response_class=HTMLResponse)
    async def submit_resend(request: Request) -> Response:
        posted = await _form(request)
        language = language_of(request, posted.get("lang"))
        _ = translations(language).gettext
        email = posted.get("resend-email", "").strip()[:320]
        form = Form(values={"email": email})
        if not pages.csrf_holds(request, posted.get("csrf_token", "")):
            form.form_error = expired_form(language)
            return activate_page(request, language, form, 403)
        if not email:
            form.errors["resend"] = _("Enter your email address.")
            return activate_page(request, language, form, 400)
        form_id = pages.request_id(posted.get("form_id", ""))
        try:
            registrations = await pages.registrations()
            refused = await pages.limited(request, "resend", email, registrations)
            if refused is not None:
                return refused_page(
                    request, "activate.html", language, _("Activate your account"),
                    ("/activate", {"email": email}), form, refused,
                    ttl=format_timedelta(settings.activation_ttl, locale=language),
                )  # fmt: skip
            try:
                reply = await registrations.resend(email, "customer", request_id=form_id)
                outcome = reply.outcome
            except UnknownRegistration:
                outcome, reply = ResendOutcome.NOT_PENDING, None
        except (_Unavailable, Busy, NoWorkerAnswered, ServerUnreachable):
            return pages.unavailable(request, language)
        if outcome is ResendOutcome.SENT and reply is not None:
            form.notice = _(
                "We have mailed a new code to %(email)s; the earlier one no longer works."
                " New codes left: %(left)s."
            ) % {"email": email, "left": reply.resends_left}
            return activate_page(request, language, form)
        if outcome is ResendOutcome.THROTTLED:
            form.errors["resend"] = _(
                "A code was sent a moment ago. Please wait a minute before asking again."
            )
            return activate_page(request, language, form, 429, headers={"Retry-After": "60"})
        if outcome is ResendOutcome.LIMIT_REACHED:
            form.errors["resend"] = _("No more codes can be sent for this registration.")
            return activate_page(request, language, form, 409)
        form.errors["resend"] = _(
            "Nothing is waiting to be activated for this address. Check the address, or"
            " register again."
        )
        return activate_page(request, language, form, 409)

    # The mailed link: a page with a button; only its POST activates.

    def confirm_page(
        request: Request, language: str, email: str, token: str, status: int = 200
    ) -> HTMLResponse:
        _ = translations(language).gettext
        return pages.render(
            request, "confirm.html", language, _("Confirm your email address"),
            ("/activate/link", {"email": email, "token": token}), status=status,
            email=email, token=token,
        )  # fmt: skip

    def broken_link(request: Request, language: str, email: str, status: int) -> HTMLResponse:
        _ = translations(language).gettext
        return pages.result(
            request, language, _("This link does not work"),
            _("The link is incomplete, used up or replaced by a newer one. Enter the code from"
              " the newest mail instead, or ask for a new one."),
            status, f"/activate?{urlencode({'email': email, 'lang': language})}",
            _("Enter a code"),
        )  # fmt: skip

    @app.get("/activate/link", include_in_schema=False, response_class=HTMLResponse)
    async def show_link(request: Request) -> Response:
        language = language_of(request)
        email = request.query_params.get("email", "")[:320]
        token = request.query_params.get("token", "")[:200]
        if not email or not token:
            return broken_link(request, language, email, 400)
        return confirm_page(request, language, email, token)

    @app.post("/activate/link", include_in_schema=False, response_class=HTMLResponse)
    async def submit_link(request: Request) -> Response:
        posted = await _form(request)
        language = language_of(request, posted.get("lang"))
        email = posted.get("email", "").strip()[:320]
        token = posted.get("token", "").strip()[:200]
        if not pages.csrf_holds(request, posted.get("csrf_token", "")):
            return confirm_page(request, language, email, token, 403)
        if not email or not token:
            return broken_link(request, language, email, 400)
        try:
            reply = await activation(request, language, email, token, posted.get("form_id", ""))
        except InvalidInput:
            return broken_link(request, language, email, 400)
        except (_Unavailable, Busy, NoWorkerAnswered, ServerUnreachable):
            return pages.unavailable(request, language)
        if isinstance(reply, Refused):
            _ = translations(language).gettext
            minutes = max(1, round(reply.retry_after / 60))
            return pages.result(
                request, language, _("Please try again"),
                _("Too many requests. Please try again in about %(minutes)s min.")
                % {"minutes": minutes},
                429, f"/activate/link?{urlencode({'email': email, 'token': token})}",
                _("Back"), headers={"Retry-After": str(reply.retry_after)},
            )  # fmt: skip
        page = outcome_page(request, language, email, reply)
        if page is not None:
            return page
        status = {ActivationOutcome.TOO_MANY_ATTEMPTS: 403}.get(reply.outcome, 409)
        if reply.outcome is ActivationOutcome.INVALID_CODE:
            status = 422
        return broken_link(request, language, email, status)

    @app.get("/activated", include_in_schema=False, response_class=HTMLResponse)
    async def activated(request: Request) -> Response:
        language = language_of(request)
        _ = translations(language).gettext
        return pages.result(
            request, language, _("Your account is active"),
            _("Thank you: your email address is confirmed and your account at %(shop)s is"
              " ready. Sign in with your email address and password.")
            % {"shop": settings.shop_name},
            200,
        )  # fmt: skip

    @app.get("/pages/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        files = {"pages.css": "text/css", "pages.js": "text/javascript"}
        if name not in files:
            return Response(status_code=404)
        return FileResponse(
            STATIC / name,
            media_type=files[name],
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )
