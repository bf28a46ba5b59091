"""Renders the mails of a registration from Jinja2 templates (``activities/templates``).

Every message has a plain-text and an HTML body. HTML templates are autoescaped, so a name such as
``<script>`` arrives as text; undefined template variables fail loudly (``StrictUndefined``) instead
of silently producing an empty sentence. The customer's name is folded onto one line first, so a
crafted name cannot add lines to the mail (for instance a fake code). English only for now: the
registration's ``locale`` is not used yet; a translation would be a second template set chosen here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from activities.roles import MailMessage

ACTIVATION = "customer_activation"
ALREADY_REGISTERED = "customer_already_registered"
WELCOME = "customer_welcome"

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


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
    ) -> MailMessage:
        """The activation code (alone on a line in the text body) and, if given, a one-click link.

        The code only ever appears in the bodies, never in ``dynamic``, so provider template data
        and logs of it stay free of secrets.
        """
        return self._message(
            "activation",
            to=to,
            subject=f"Your activation code for {self.shop_name}",
            category=ACTIVATION,
            idempotency_key=idempotency_key,
            name=name,
            code=code,
            expires_at=_utc(expires_at),
            link=link,
        )

    def already_registered(self, to: str, idempotency_key: str) -> MailMessage:
        """Tells the owner of an existing account about the attempt; no code, since there is
        nothing to activate, but a way back in via password reset.

        It greets without a name: the name was typed by whoever tried to register, perhaps a
        stranger, and free text of theirs in a genuine mail from the shop is a phishing tool.
        """
        return self._message(
            "already_registered",
            to=to,
            subject=f"You already have an account at {self.shop_name}",
            category=ALREADY_REGISTERED,
            idempotency_key=idempotency_key,
            password_reset_url=self.password_reset_url,
        )

    def welcome(
        self, to: str, name: str, customer_number: str, idempotency_key: str
    ) -> MailMessage:
        """Confirms the activation and gives the customer number."""
        return self._message(
            "welcome",
            to=to,
            subject=f"Welcome to {self.shop_name}",
            category=WELCOME,
            idempotency_key=idempotency_key,
            name=name,
            customer_number=customer_number,
        )

    def _message(
        self,
        template: str,
        *,
        to: str,
        subject: str,
        category: str,
        idempotency_key: str,
        name: str | None = None,
        **context: Any,
    ) -> MailMessage:
        values = {"shop_name": self.shop_name, **context}
        if name is not None:  # no name: the template greets without one
            values["name"] = _one_line(name)
        return MailMessage(
            to=to,
            subject=subject,
            text=_ENV.get_template(f"{template}.txt").render(values),
            html=_ENV.get_template(f"{template}.html").render(values),
            category=category,
            idempotency_key=idempotency_key,
        )
