"""Renders the mails of a registration from Jinja2 templates (``activities/templates``).

Every message has a plain-text and an HTML body. HTML templates are autoescaped, so a name such as
``<script>`` arrives as text; undefined template variables fail loudly (``StrictUndefined``) instead
of silently producing an empty sentence. The customer's name is folded onto one line first, so a
crafted name cannot add lines to the mail (for instance a fake code).

Languages: English, Swedish and German, chosen from the registration's locale (``sv-SE`` -> sv,
``de`` -> de, anything else or none -> en; ``mail_language``). Subjects and bodies go through the
gettext catalogs in ``activities/locales/<language>/LC_MESSAGES/mails.po`` (read as the pages'
are, ``common.i18n``; the templates call ``_()`` with Jinja2's i18n extension, whose values are
escaped in HTML like any other). A message without a translation comes out in English. The text
and HTML bodies share their sentences' messages, so a translation says the same in both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel.support import NullTranslations
from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    pass_eval_context,
    select_autoescape,
)
from jinja2.nodes import EvalContext
from markupsafe import Markup

from activities.roles import MailMessage
from common.i18n import DEFAULT, catalog, supported

ACTIVATION = "customer_activation"
ALREADY_REGISTERED = "customer_already_registered"
WELCOME = "customer_welcome"

HERE = Path(__file__).parent
LOCALES = HERE / "locales"
DOMAIN = "mails"


def mail_language(locale: str | None) -> str:
    """The language of a registration's mails: its locale's, if we have it, else English."""
    return supported(locale) or DEFAULT


def translations(language: str) -> NullTranslations:
    """The mails' catalog of ``language`` (English: the messages as written)."""
    return catalog(LOCALES, DOMAIN, language)


@cache
def _environment(language: str) -> Environment:
    """The templates with ``language``'s catalog installed (one environment per language)."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    messages = translations(language)
    env.install_gettext_translations(messages, newstyle=True)  # type: ignore[attr-defined]

    # The templates call ``_``, which the extension makes an alias of its ``gettext`` through
    # three ``Context.call`` levels per message: that tripled the time of rendering a mail (from
    # 70 to 240 us; some ten messages a body). This ``_`` does in one what the extension's
    # newstyle ``gettext`` does (tests/test_mail.py compares them): the translation is trusted
    # markup where the template autoescapes, and the values put into it are escaped there.
    @pass_eval_context
    def gettext(eval_context: EvalContext, message: str, **values: Any) -> str:
        translated = messages.gettext(message)
        if eval_context.autoescape:
            return Markup(translated) % values  # noqa: S704 (our catalog's text, not input)
        return translated % values

    env.globals["_"] = gettext
    return env


def _one_line(text: str) -> str:
    """Collapse whitespace (newlines included) and drop control characters."""
    return "".join(ch for ch in " ".join(text.split()) if ch.isprintable())


def _utc(moment: datetime) -> str:
    """An unambiguous, locale-independent time; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


class MailRenderer:
    """Builds the registration mails for one shop; holds no per-message state."""

    def __init__(self, shop_name: str, password_reset_url: str) -> None:
        self.shop_name = shop_name
        self.password_reset_url = password_reset_url

    def activation(
        self,
        to: str,
        name: str,
        code: str,
        expires_at: datetime,
        link: str | None,
        idempotency_key: str,
        locale: str | None = None,
    ) -> MailMessage:
        """The activation code (alone on a line in the text body) and, if given, a one-click link.

        The code only ever appears in the bodies, never in ``dynamic``, so provider template data
        and logs of it stay free of secrets.
        """
        language = mail_language(locale)
        _ = translations(language).gettext
        return self._message(
            "activation",
            language,
            to=to,
            subject=_("Your activation code for %(shop_name)s") % {"shop_name": self.shop_name},
            category=ACTIVATION,
            idempotency_key=idempotency_key,
            name=name,
            code=code,
            expires_at=_utc(expires_at),
            link=link,
        )

    def already_registered(
        self, to: str, idempotency_key: str, locale: str | None = None
    ) -> MailMessage:
        """Tells the owner of an existing account about the attempt; no code, since there is
        nothing to activate, but a way back in via password reset.

        It greets without a name: the name was typed by whoever tried to register, perhaps a
        stranger, and free text of theirs in a genuine mail from the shop is a phishing tool.
        """
        language = mail_language(locale)
        _ = translations(language).gettext
        return self._message(
            "already_registered",
            language,
            to=to,
            subject=_("You already have an account at %(shop_name)s")
            % {"shop_name": self.shop_name},
            category=ALREADY_REGISTERED,
            idempotency_key=idempotency_key,
            password_reset_url=self.password_reset_url,
        )

    def welcome(
        self,
        to: str,
        name: str,
        customer_number: str,
        idempotency_key: str,
        locale: str | None = None,
    ) -> MailMessage:
        """Confirms the activation and gives the customer number."""
        language = mail_language(locale)
        _ = translations(language).gettext
        return self._message(
            "welcome",
            language,
            to=to,
            subject=_("Welcome to %(shop_name)s") % {"shop_name": self.shop_name},
            category=WELCOME,
            idempotency_key=idempotency_key,
            name=name,
            customer_number=customer_number,
        )

    def _message(
        self,
        template: str,
        language: str,
        *,
        to: str,
        subject: str,
        category: str,
        idempotency_key: str,
        name: str | None = None,
        **context: Any,
    ) -> MailMessage:
        values = {"shop_name": self.shop_name, "language": language, **context}
        if name is not None:  # no name: the template greets without one
            values["name"] = _one_line(name)
        env = _environment(language)
        return MailMessage(
            to=to,
            subject=subject,
            text=env.get_template(f"{template}.txt").render(values),
            html=env.get_template(f"{template}.html").render(values),
            category=category,
            idempotency_key=idempotency_key,
        )
