"""Mail rendering and the two mail providers, against real files and a real SMTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP, SMTPUTF8, default
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import mail as mail_module
from activities import rendering
from activities.codes import ActivationCodes
from activities.errors import ConfigurationError, InvalidRequest, ProviderUnavailable
from activities.mail import MailActivities
from activities.models import IssueActivationInput, NoticeInput
from activities.providers import mime
from activities.providers.mime import MimeBuilder
from activities.providers.outbox import OutboxMail
from activities.providers.smtp import SmtpMail
from activities.rendering import MailRenderer, mail_language
from activities.roles import MailMessage
from bench.mailbox import newest_code
from common.i18n import catalog
from common.settings import Settings, SmtpSecurity
from tests.certificates import LoopbackCertificates, loopback_certificates
from tests.outbox import latest_code, messages_to
from tests.ports import free_port

SENDER = "Test shop <no-reply@shop.test>"
RESET_URL = "https://shop.test/password-reset?from=mail&x=1"
EVIL_NAME = "<script>alert(1)</script>"

renderer = MailRenderer("Test shop", RESET_URL)
ACTIVITIES = Path(mail_module.__file__).parent


def activation(to: str = "ann@example.com", key: str = "reg-1/activation/1") -> MailMessage:
    return renderer.activation(
        to=to,
        name="Ann",
        code="042137",
        expires_at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
        link=None,
        idempotency_key=key,
    )


# Rendering


def test_activation_text_has_code_alone_on_a_line_and_the_link() -> None:
    message = renderer.activation(
        to="ann@example.com",
        name="Ann",
        code="042137",
        expires_at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
        link="https://shop.test/activate?email=ann%40example.com&token=abc",
        idempotency_key="k",
    )
    assert "042137" in message.text.splitlines()
    assert "https://shop.test/activate?email=ann%40example.com&token=abc" in message.text
    assert "2030-01-02 03:04 UTC" in message.text
    assert "042137" in message.html
    assert 'href="https://shop.test/activate?email=ann%40example.com&amp;token=abc"' in message.html
    assert message.category == "customer_activation"
    assert message.subject == "Your activation code for Test shop"
    assert message.dynamic == {}


def test_activation_without_link_has_no_link() -> None:
    message = activation()
    assert "http" not in message.text
    assert "href" not in message.html


def test_html_escapes_the_name() -> None:
    message = renderer.activation(
        to="ann@example.com",
        name=EVIL_NAME,
        code="042137",
        expires_at=datetime(2030, 1, 2, tzinfo=UTC),
        link=None,
        idempotency_key="k",
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message.html
    assert "<script>" not in message.html
    assert "<script>" not in renderer.welcome("ann@example.com", EVIL_NAME, "CUST-1", "k").html


def test_name_cannot_add_lines() -> None:
    message = renderer.activation(
        to="ann@example.com",
        name="Ann\n\n999999\r\nCall us",
        code="042137",
        expires_at=datetime(2030, 1, 2, tzinfo=UTC),
        link=None,
        idempotency_key="k",
    )
    assert "999999" not in message.text.splitlines()
    assert "Hello Ann 999999 Call us," in message.text.splitlines()


def test_already_registered_has_reset_url_and_no_code() -> None:
    message = renderer.already_registered("ann@example.com", "k")
    assert message.text.startswith("Hello,\n")
    assert "<p>Hello,</p>" in message.html
    assert RESET_URL in message.text
    assert RESET_URL.replace("&", "&amp;") in message.html
    assert not re.search(r"\b[0-9]{6}\b", message.text + message.html)
    assert message.category == "customer_already_registered"


def test_welcome_has_customer_number() -> None:
    message = renderer.welcome("ann@example.com", "Ann", "CUST-000042", "k")
    assert "CUST-000042" in message.text
    assert "CUST-000042" in message.html
    assert message.category == "customer_welcome"


# Languages

STAMP = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
LINK = "https://shop.test/activate?email=ann%40example.com&token=abc&lang=sv"

TRANSLATED = {
    "sv-SE": {
        "activation": (
            "Din aktiveringskod för Test shop",
            ["Hej Ann,", "Ange den här koden", "Koden gäller till 2030-01-02 03:04 UTC."],
            ["Aktivera mitt konto", "Vänliga hälsningar"],
        ),
        "welcome": (
            "Välkommen till Test shop",
            ["Hej Ann,", "Ditt kundnummer är CUST-000042."],
            ["Ditt kundnummer är <strong>CUST-000042</strong>.", "Vänliga hälsningar"],
        ),
        "already_registered": (
            "Du har redan ett konto hos Test shop",
            ["Hej,", "Om du har glömt ditt lösenord"],
            ["<p>Hej,</p>", "Du har redan ett konto"],
        ),
    },
    "de": {
        "activation": (
            "Ihr Aktivierungscode für Test shop",
            ["Hallo Ann,", "Geben Sie diesen Code ein", "Der Code ist gültig bis 2030-01-02"],
            ["Mein Konto aktivieren", "Viele Grüße"],
        ),
        "welcome": (
            "Willkommen bei Test shop",
            ["Hallo Ann,", "Ihre Kundennummer ist CUST-000042."],
            ["Ihre Kundennummer ist <strong>CUST-000042</strong>.", "Viele Grüße"],
        ),
        "already_registered": (
            "Sie haben bereits ein Konto bei Test shop",
            ["Hallo,", "Wenn Sie Ihr Passwort vergessen haben"],
            ["<p>Hallo,</p>", "Sie haben bereits ein Konto"],
        ),
    },
}


def each_mail(locale: str | None) -> dict[str, MailMessage]:
    return {
        "activation": renderer.activation(
            "ann@example.com", "Ann", "042137", STAMP, LINK, "k", locale=locale
        ),
        "welcome": renderer.welcome("ann@example.com", "Ann", "CUST-000042", "k", locale=locale),
        "already_registered": renderer.already_registered("ann@example.com", "k", locale=locale),
    }


@pytest.mark.parametrize("locale", TRANSLATED)
def test_each_mail_is_translated(locale: str) -> None:
    english = each_mail(None)
    language = locale[:2]
    for kind, message in each_mail(locale).items():
        subject, in_text, in_html = TRANSLATED[locale][kind]
        assert message.subject == subject
        for words in in_text:
            assert words in message.text, (kind, words)
        for words in in_html:
            assert words in message.html, (kind, words)
        assert f'<html lang="{language}">' in message.html
        assert "Hello" not in message.text + message.html and "Kind regards" not in message.text
        # Only the words change: the same key, category, recipient and values.
        same = english[kind]
        assert (message.idempotency_key, message.category, message.to) == (
            same.idempotency_key,
            same.category,
            same.to,
        )
    activation, welcome, notice = each_mail(locale).values()
    assert "042137" in activation.text.splitlines() and LINK in activation.text
    assert LINK.replace("&", "&amp;") in activation.html
    assert "CUST-000042" in welcome.text
    assert RESET_URL in notice.text and RESET_URL.replace("&", "&amp;") in notice.html


def test_a_translated_mail_still_escapes_and_folds_the_name() -> None:
    message = renderer.activation(
        "ann@example.com", f"{EVIL_NAME}\n042000", "042137", STAMP, None, "k", locale="sv"
    )
    assert f"Hej {EVIL_NAME} 042000," in message.text.splitlines()
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    shop = MailRenderer("Bücher & <Söhne>", RESET_URL)
    welcome = shop.welcome("ann@example.com", "Ann", "<b>1</b>", "k", locale="de")
    assert welcome.subject == "Willkommen bei Bücher & <Söhne>"
    assert "Ihr Konto bei Bücher &amp; &lt;Söhne&gt; ist jetzt aktiv" in welcome.html
    assert "<strong>&lt;b&gt;1&lt;/b&gt;</strong>" in welcome.html


@pytest.mark.parametrize("language", ["en", "sv", "de"])
def test_the_templates_underscore_is_the_extensions_gettext(language: str) -> None:
    """``_`` is bound to a one-call equivalent of the i18n extension's newstyle ``gettext``."""
    env = rendering._environment(language)
    calls = (
        '"Hello %(name)s,", name=name',
        '"Kind regards,"',
        '"Welcome to %(shop_name)s", shop_name=name',
    )
    for escaping in ("true", "false"):
        for call in calls:
            source = (
                f"{{% autoescape {escaping} %}}{{{{ _({call}) }}}}|{{{{ gettext({call}) }}}}"
                "{% endautoescape %}"
            )
            ours, extensions = env.from_string(source).render(name=EVIL_NAME).split("|")
            assert ours == extensions, (escaping, call)
            assert ("&lt;script" in ours) is (escaping == "true" and "name" in call)


@pytest.mark.parametrize("locale", [None, "", "en", "en-GB", "fr-FR", "nb_NO", "svenska", "x"])
def test_another_locale_gets_the_mails_in_english(locale: str | None) -> None:
    assert mail_language(locale) == "en"
    assert each_mail(locale) == each_mail("en")
    assert each_mail(locale)["activation"].subject == "Your activation code for Test shop"


def test_locale_tags_map_to_their_language() -> None:
    assert [mail_language(tag) for tag in ("sv-SE", "sv_FI", "SV", "de", "de-AT", "de_CH")] == [
        "sv",
        "sv",
        "sv",
        "de",
        "de",
        "de",
    ]


def test_a_message_missing_from_a_catalog_is_english(tmp_path: Path) -> None:
    """An entry left out, untranslated or fuzzy (``pybabel update`` marks changed ones so) is
    read as missing: the English text, never an empty or a stale one."""
    folder = tmp_path / "sv" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "mails.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Hello,"\nmsgstr "Hej,"\n\n'
        'msgid "Kind regards,"\nmsgstr ""\n\n'
        '#, fuzzy\nmsgid "Welcome to %(shop_name)s"\nmsgstr "Hejdå från %(shop_name)s"\n',
        encoding="utf-8",
    )
    translations = catalog(tmp_path, "mails", "sv")
    assert translations.gettext("Hello,") == "Hej,"
    assert translations.gettext("Kind regards,") == "Kind regards,"
    assert translations.gettext("Welcome to %(shop_name)s") == "Welcome to %(shop_name)s"
    assert translations.gettext("Not in the catalog") == "Not in the catalog"
    assert catalog(tmp_path, "mails", "de").gettext("Hello,") == "Hello,"  # no catalog at all


def test_the_catalogs_hold_every_message_of_the_mails() -> None:
    """In step with the templates and the subjects (``activities/babel.cfg``): no message
    missing, none empty or fuzzy, and the placeholders of each kept."""
    method_map = [("rendering.py", "python"), ("templates/**.*", "jinja2")]
    options = {"templates/**.*": {"extensions": "jinja2.ext.i18n"}}
    extracted = {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(ACTIVITIES, method_map, options)
    }
    assert "Your activation code for %(shop_name)s" in extracted  # the subjects, from Python
    assert "Kind regards," in extracted  # the layout, from the templates
    for language in ("sv", "de"):
        path = ACTIVITIES / "locales" / language / "LC_MESSAGES" / "mails.po"
        with path.open("rb") as file:
            messages = read_po(file)
        ids = {message.id for message in messages if message.id}
        assert ids == extracted, f"{path}: run pybabel update (docs/providers/mail.md)"
        for message in messages:
            if message.id:
                assert message.string, f"{language}: no translation of {message.id!r}"
                assert not message.fuzzy, f"{language}: fuzzy {message.id!r}"
                placeholders = re.findall(r"%\((\w+)\)s", str(message.id))
                assert sorted(re.findall(r"%\((\w+)\)s", str(message.string))) == sorted(
                    placeholders
                ), f"{language}: placeholders of {message.id!r}"
                assert "%" not in re.sub(r"%\(\w+\)s", "", str(message.string))
    with (ACTIVITIES / "locales" / "mails.pot").open("rb") as file:
        assert {message.id for message in read_po(file) if message.id} == extracted


# Outbox


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def parse(path: Path) -> EmailMessage:
    with path.open("rb") as file:
        return BytesParser(policy=default).parse(file)


async def test_outbox_writes_one_parseable_eml(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"  # created on first send
    await OutboxMail(outbox, SENDER).send(activation(to="Ann@Example.com"))

    (name,) = listing(outbox)
    assert name.endswith(".eml")
    parsed = parse(outbox / name)
    assert parsed["From"] == SENDER
    assert parsed["To"] == "Ann@Example.com"
    assert parsed["Subject"] == "Your activation code for Test shop"
    assert parsed["X-Category"] == "customer_activation"
    assert parsed["Date"] is not None
    assert re.fullmatch(r"<[0-9a-f]{32}@shop\.test>", parsed["Message-ID"])
    assert parsed.get_content_type() == "multipart/alternative"
    html = parsed.get_body(preferencelist=("html",))
    assert html is not None and "042137" in html.get_content()
    assert latest_code(outbox, "ann@example.com") == "042137"


async def test_outbox_is_idempotent_per_key(tmp_path: Path) -> None:
    outbox = OutboxMail(tmp_path, SENDER)
    await outbox.send(activation(key="reg-1/activation/1"))
    await outbox.send(activation(key="reg-1/activation/1"))
    assert len(listing(tmp_path)) == 1

    await outbox.send(activation(key="reg-1/activation/2"))
    names = listing(tmp_path)
    assert len(names) == 2
    assert all(name.endswith(".eml") for name in names)  # no temp files left behind


ANN_FIRST_CODE = IssueActivationInput(
    registration_id="registration-ann@example.com",
    principal_id="principal-ann",
    sequence=1,
    email="ann@example.com",
    name="Ann",
    expires_at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
)


def mail_keys(sent: list[MailMessage]) -> list[str]:
    return [message.idempotency_key for message in sent]


async def test_a_retried_issuance_mails_the_same_code_under_the_same_key(tmp_path: Path) -> None:
    """An attempt whose answer was lost after the provider took the mail, or a local activity run
    again after its workflow task was lost (attempt 1 again): the same code, the same key, so the
    outbox keeps one mail, and the digest the workflow keeps is that mail's code's."""
    codes = ActivationCodes([b"k" * 32])
    sent = Captured()
    outbox = OutboxMail(tmp_path, SENDER)
    mail = MailActivities(Forwarded(sent, outbox), renderer, codes, "https://shop.test/activate")
    runs = ActivityEnvironment()  # the same activity info, attempt 1, both times
    first = await runs.run(mail.issue_activation, ANN_FIRST_CODE)
    runs.info = dataclasses.replace(runs.info, attempt=2)
    second = await runs.run(mail.issue_activation, ANN_FIRST_CODE)

    assert first == second
    assert len(listing(tmp_path)) == 1
    one, two = sent.messages
    assert one.idempotency_key == two.idempotency_key and one.redact == two.redact
    assert one.idempotency_key.startswith(f"{runs.info.workflow_id}/{runs.info.workflow_run_id}/")
    code, token = one.redact
    assert latest_code(tmp_path, "ann@example.com") == code
    assert codes.matches(ANN_FIRST_CODE.registration_id, second, code)
    assert codes.matches(ANN_FIRST_CODE.registration_id, second, token)


async def test_a_resend_or_another_run_mails_a_new_code(tmp_path: Path) -> None:
    codes = ActivationCodes([b"k" * 32])
    sent = Captured()
    mail = MailActivities(Forwarded(sent, OutboxMail(tmp_path, SENDER)), renderer, codes, None)
    runs = ActivityEnvironment()
    first = await runs.run(mail.issue_activation, ANN_FIRST_CODE)
    resent = await runs.run(
        mail.issue_activation, ANN_FIRST_CODE.model_copy(update={"sequence": 2})
    )
    runs.info = dataclasses.replace(runs.info, workflow_run_id="the-next-run")
    next_run = await runs.run(mail.issue_activation, ANN_FIRST_CODE)

    assert len(set(mail_keys(sent.messages))) == len(listing(tmp_path)) == 3
    first_code, resent_code, next_run_code = (message.redact[0] for message in sent.messages)
    assert len({first_code, resent_code, next_run_code}) == 3  # fixed inputs: no 1e-6 collision
    registration = ANN_FIRST_CODE.registration_id
    assert codes.matches(registration, resent, resent_code)
    assert not codes.matches(registration, resent, first_code)
    assert codes.matches(registration, next_run, next_run_code)
    assert not codes.matches(registration, first, next_run_code)


class ProviderCodes:
    """A ``CodeIssuer`` that makes a new code per call, or (``same``) keeps giving one."""

    def __init__(self, same: bool = False) -> None:
        self.same = same
        self.made = 0

    async def new_code(self, principal_id: str) -> str:
        self.made += 1
        return "314159" if self.same else f"{271828 + self.made:06d}"

    async def confirm_code(self, principal_id: str, code: str) -> bool:
        raise AssertionError("not asked here")


@pytest.mark.parametrize("same", [False, True])
async def test_a_retry_mails_the_provider_code_it_got_under_a_key_naming_it(
    tmp_path: Path, same: bool
) -> None:
    """A provider that makes its codes is asked again on a retry: a new code (the first one no
    longer works at the provider) goes out under a new key, not swallowed as a repeat of the
    first mail; a provider that gives the same code again gets the same key, so one mail."""
    codes = ActivationCodes([b"k" * 32])
    provider = ProviderCodes(same)
    outbox = OutboxMail(tmp_path, SENDER)
    mail = MailActivities(outbox, renderer, codes, "https://shop.test/activate", provider)
    runs = ActivityEnvironment()
    await runs.run(mail.issue_activation, ANN_FIRST_CODE)
    issued = await runs.run(mail.issue_activation, ANN_FIRST_CODE)

    assert provider.made == 2
    assert len(listing(tmp_path)) == (1 if same else 2)
    newest = latest_code(tmp_path, "ann@example.com")
    assert newest == ("314159" if same else "271830")
    assert codes.matches(ANN_FIRST_CODE.registration_id, issued, newest)
    assert issued.token_digest is None  # the provider checks its own codes: no link


async def test_a_code_key_rotated_between_attempts_mails_the_new_code(tmp_path: Path) -> None:
    """Derived with the newest key: a retry on a worker with a new key makes another code, whose
    mail must go out (a new key) since the digest returned is that code's."""
    old, new = b"o" * 32, b"n" * 32
    outbox = OutboxMail(tmp_path, SENDER)
    runs = ActivityEnvironment()
    before = MailActivities(outbox, renderer, ActivationCodes([old]), None)
    await runs.run(before.issue_activation, ANN_FIRST_CODE)
    rotated = ActivationCodes([new, old])
    after = MailActivities(outbox, renderer, rotated, None)
    issued = await runs.run(after.issue_activation, ANN_FIRST_CODE)

    assert len(listing(tmp_path)) == 2
    assert rotated.matches(
        ANN_FIRST_CODE.registration_id, issued, latest_code(tmp_path, "ann@example.com")
    )


async def test_issue_activation_needs_a_workflow_run() -> None:
    """The code is derived from the run: without one (an activity started on its own) there is
    nothing to tell two registrations apart, so no code is made."""
    mail = MailActivities(Captured(), renderer, ActivationCodes([b"k" * 32]), None)
    runs = ActivityEnvironment()
    runs.info = dataclasses.replace(runs.info, workflow_run_id=None)
    with pytest.raises(ApplicationError, match="derives the code from the run") as raised:
        await runs.run(mail.issue_activation, ANN_FIRST_CODE)
    assert raised.value.non_retryable


class Captured:
    """A ``MailProvider`` that keeps what it is given."""

    in_process = True

    def __init__(self) -> None:
        self.messages: list[MailMessage] = []

    async def send(self, message: MailMessage) -> None:
        self.messages.append(message)

    async def aclose(self) -> None:
        """Nothing to release."""


class Forwarded:
    """A ``MailProvider`` that shows each message to ``seen`` and hands it on to ``inner``."""

    in_process = True

    def __init__(self, seen: Captured, inner: OutboxMail) -> None:
        self.seen = seen
        self.inner = inner

    async def send(self, message: MailMessage) -> None:
        await self.seen.send(message)
        await self.inner.send(message)

    async def aclose(self) -> None:
        """Nothing to release."""


async def test_the_activation_mail_names_its_secrets_for_the_provider_to_redact() -> None:
    """A provider's error may quote the request (``MailMessage.redact``)."""
    sent = Captured()
    codes = ActivationCodes([b"k" * 32])
    mail = MailActivities(sent, renderer, codes, "https://shop.test/activate")
    issued = await ActivityEnvironment().run(mail.issue_activation, ANN_FIRST_CODE)
    (message,) = sent.messages
    code, token = message.redact
    assert codes.matches(ANN_FIRST_CODE.registration_id, issued, code) and code in message.text
    assert f"token={token}" in message.text


@pytest.mark.parametrize(
    ("locale", "lang"), [("sv-SE", "sv"), ("de", "de"), ("en-US", None), (None, None)]
)
async def test_the_mails_follow_the_registration_locale_under_the_same_keys(
    locale: str | None, lang: str | None
) -> None:
    """The language changes the words and the link's ``lang``, never the code, the token, the
    secrets to redact or a mail's idempotency key."""
    codes = ActivationCodes([b"k" * 32])
    sent = Captured()
    mail = MailActivities(sent, renderer, codes, "https://shop.test/activate")
    runs = ActivityEnvironment()
    for chosen in (None, locale):
        await runs.run(mail.issue_activation, ANN_FIRST_CODE.model_copy(update={"locale": chosen}))
        notice = NoticeInput(
            email="ann@example.com", name="Ann", locale=chosen, customer_number="C1"
        )
        await runs.run(mail.send_welcome, notice)
        await runs.run(mail.send_already_registered, notice)
    english, localized = sent.messages[:3], sent.messages[3:]
    assert mail_keys(localized) == mail_keys(english)
    assert localized[0].redact == english[0].redact
    code, token = localized[0].redact
    assert code in localized[0].text.splitlines()
    (link,) = re.findall(r"https://shop\.test/activate\?\S+", localized[0].text)
    query = parse_qs(urlsplit(link).query)
    assert query == {
        "email": ["ann@example.com"],
        "token": [token],
        **({"lang": [lang]} if lang else {}),
    }
    expected = mail_language(locale)
    for message in localized:
        assert f'<html lang="{expected}">' in message.html
    assert (localized[1].subject == english[1].subject) is (lang is None)


async def test_already_registered_notice_leaves_out_the_typed_name(tmp_path: Path) -> None:
    """The name was typed by whoever tried to register: the account's owner must not get a
    genuine shop mail carrying a stranger's text."""
    bait = "Ann. Your account is locked, call +1 555 0100"
    mail = MailActivities(
        OutboxMail(tmp_path, SENDER), renderer, ActivationCodes([b"k" * 32]), None
    )
    notice = NoticeInput(email="ann@example.com", name=bait)
    await ActivityEnvironment().run(mail.send_already_registered, notice)

    (message,) = messages_to(tmp_path, "ann@example.com")
    assert message["X-Category"] == "customer_already_registered"
    for kind in ("plain", "html"):
        body = message.get_body(preferencelist=(kind,))
        assert body is not None and "555 0100" not in body.get_content()


async def test_outbox_helpers_pick_recipient_and_newest(tmp_path: Path) -> None:
    outbox = OutboxMail(tmp_path, SENDER)
    await outbox.send(activation(to="ann@example.com", key="a"))
    await outbox.send(activation(to="bob@example.com", key="b"))
    await outbox.send(renderer.welcome("ann@example.com", "Ann", "CUST-1", "c"))

    assert [m["X-Category"] for m in messages_to(tmp_path, "ann@example.com")] == [
        "customer_activation",
        "customer_welcome",
    ]
    assert latest_code(tmp_path, "bob@example.com") == "042137"
    with pytest.raises(AssertionError, match="no line with a 6-digit code"):
        latest_code(tmp_path, "ann@example.com")
    with pytest.raises(AssertionError, match=r"no mail to carl@example\.com"):
        latest_code(tmp_path, "carl@example.com")


async def test_benchmark_reads_the_code_the_tests_read(tmp_path: Path) -> None:
    """``bench.mailbox.newest_code`` (cheap parser, one recipient's folder) agrees with
    ``latest_code``, and takes the newest mail: a resent code replaces the first."""
    outbox = OutboxMail(tmp_path, SENDER)
    await outbox.send(activation(to="zoë@example.com", key="a"))
    resent = renderer.activation(
        to="zoë@example.com",
        name="Zoë Ångström",
        code="765432",
        expires_at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
        link=None,
        idempotency_key="b",
    )
    await outbox.send(resent)
    assert newest_code(tmp_path) == latest_code(tmp_path, "zoë@example.com") == "765432"


async def test_header_injection_is_rejected(tmp_path: Path) -> None:
    message = activation().model_copy(update={"to": "ann@example.com\r\nBcc: eve@example.com"})
    with pytest.raises(InvalidRequest):
        await OutboxMail(tmp_path, SENDER).send(message)
    assert listing(tmp_path) == []


IDN_DOMAIN = ("user@bücher.de", "user@xn--bcher-kva.de")
UTF8_LOCAL_PART = ("jörg@bücher.de", "jörg@xn--bcher-kva.de")
"""International recipients and the To header that carries them: domain in IDNA form, and a
local part without an ASCII form as UTF-8 (RFC 6532)."""


def to_header(raw: bytes) -> str:
    """The To header as written, before a parser decodes any encoded-word in it."""
    (line,) = (line for line in raw.splitlines() if line.startswith(b"To: "))
    return line.decode()


@pytest.mark.parametrize(("to", "header"), [IDN_DOMAIN, UTF8_LOCAL_PART])
async def test_outbox_writes_international_addresses_without_encoded_words(
    tmp_path: Path, to: str, header: str
) -> None:
    await OutboxMail(tmp_path, SENDER).send(activation(to=to))

    (name,) = listing(tmp_path)
    assert to_header((tmp_path / name).read_bytes()) == f"To: {header}"
    assert parse(tmp_path / name)["To"] == header


# Fast MIME (``MimeBuilder.as_bytes``) against the ``email`` package (``MimeBuilder.build``)

NAMES = [
    "Ann",
    "Zoë Åström-Ñúñez",
    EVIL_NAME,
    'José "Pepe" d\'Artagnan & Co = 100% <ok>',
    "From the start",
    "名前 テスト",
    "x" * 200,
    "tab\there  trailing   ",
]
RECIPIENTS = [
    "ann@example.com",
    "first.last+tag_1@sub.example-shop.co.uk",
    IDN_DOMAIN[0],
    UTF8_LOCAL_PART[0],
    f"{'l' * 64}@example.com",  # longer than a To line without folding: takes build
]
SHOPS = ["Test shop", "Bücher & Söhne AB", "A shop whose name is long enough to fold the subject"]


LOCALES = [None, "sv-SE", "de"]
"""Each mail in each language: a subject of its own (``ö``, ``ü``: encoded words), so a layout."""


def messages(shop: str) -> Iterator[MailMessage]:
    shop_renderer = MailRenderer(shop, RESET_URL)
    for number, (name, to) in enumerate(zip(NAMES * 2, RECIPIENTS * 4, strict=False)):
        key = f"registration-{number}/run/purpose"
        link = f"https://shop.test/activate?email={to}&token={'t' * 43}" if number % 2 else None
        expires = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
        locale = LOCALES[number % len(LOCALES)]
        yield shop_renderer.activation(to, name, f"{number:06d}", expires, link, key, locale)
        yield shop_renderer.welcome(to, name, f"CUST{100000 + number}", key, locale)
        yield shop_renderer.already_registered(to, key, locale)


SENDERS = [
    SENDER,
    # A domain long enough that the package folds the Message-ID header onto a line of its own.
    "Shop <no-reply@notifications.mail.example-shop.co.uk>",
    '" <no-reply@shop.test>',  # an unbalanced quote: the domain parsed is "shop.test>"
    "Bücher & Söhne <no-reply@shop.test>",
]


@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize("shop", SHOPS)
def test_fast_mime_writes_the_bytes_of_the_email_package(
    shop: str, sender: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same date and boundary, same bytes: for plain recipients from the layout (it exists for
    each template in each language, so the fast way is the one compared), for others from
    ``build``."""
    monkeypatch.setattr(mime, "format_datetime", lambda moment: "Wed, 02 Jan 2030 03:04:05 +0000")
    monkeypatch.setattr(mime, "_boundary", lambda: f"=={'9f' * 16}==")
    builder = MimeBuilder(sender)
    plain = 0
    for message in messages(shop):
        assert mime._layout(sender, message.subject, message.category) is not None
        plain += bool(mime._PLAIN_ADDRESS.fullmatch(mime._ascii_domain(message.to)))
        email = builder.build(message)
        utf8 = mime.needs_smtputf8(email)
        expected = email.as_bytes(policy=SMTPUTF8 if utf8 else SMTP)
        assert builder.as_bytes(message) == (expected, utf8), message.to
    assert plain == 30  # the fast way was taken for 10 of the 16 recipients, 3 mails each


def test_fast_mime_bodies_decode_to_what_was_rendered() -> None:
    for message in messages("Test shop"):
        data, _ = MimeBuilder(SENDER).as_bytes(message)
        parsed = BytesParser(policy=default).parsebytes(data)
        assert isinstance(parsed, EmailMessage)
        bodies = [part.get_content() for part in parsed.iter_parts()]
        lines = [[line.rstrip() for line in body.splitlines()] for body in bodies]
        rendered = [message.text, message.html]
        assert lines == [[line.rstrip() for line in body.splitlines()] for body in rendered]


def test_a_layout_is_made_once_per_template_for_every_builder() -> None:
    """The benchmark's outbox makes a provider, and so a builder, per recipient's folder."""
    mime._layout.cache_clear()
    for number in range(3):
        MimeBuilder(SENDER).as_bytes(activation(key=f"reg-{number}/activation/1"))
    info = mime._layout.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_a_layout_is_made_once_per_language_of_a_template() -> None:
    """Each language has its subject, so its layout; the languages' layouts all stay kept."""
    mime._layout.cache_clear()
    for _ in range(2):
        for locale in LOCALES:
            message = renderer.activation(
                "ann@example.com", "Ann", "042137", STAMP, None, "k", locale
            )
            data, _ = MimeBuilder(SENDER).as_bytes(message)
            parsed = BytesParser(policy=default).parsebytes(data)
            assert parsed["Subject"] == message.subject
    info = mime._layout.cache_info()
    assert (info.misses, info.hits) == (3, 3)
    assert mime.LAYOUT_CACHE_SIZE >= 3 * len(LOCALES)  # a worker's three mails in each language


def test_a_subject_holding_a_stand_in_takes_the_email_package() -> None:
    """The layout cannot tell the stand-in in the subject from the one it stands for: there is
    none, and each message is built and generated in full."""
    builder = MimeBuilder(SENDER)
    message = activation().model_copy(update={"subject": f"Code {mime._STAND_INS[mime._Field.TO]}"})
    assert mime._layout(SENDER, message.subject, message.category) is None
    data, utf8 = builder.as_bytes(message)
    assert not utf8 and BytesParser(policy=default).parsebytes(data)["Subject"] == message.subject


def test_fast_mime_refuses_header_injection_as_build_does() -> None:
    """Also a line break at the end of a value, which the package lets through and which would
    end the header block early."""
    builder = MimeBuilder(SENDER)
    updates: list[dict[str, str]] = [
        {"to": "ann@example.com\r\nBcc: eve@example.com"},
        {"subject": "Hi\r\nBcc: x"},
        {"to": "ann@example.com\n"},
        {"subject": "Hi\r"},
        {"category": "customer_activation\n"},
    ]
    for update in updates:
        message = activation().model_copy(update=update)
        with pytest.raises(InvalidRequest):
            builder.build(message)
        with pytest.raises(InvalidRequest):
            builder.as_bytes(message)


# SMTP

REFUSED = "gone@example.com"
BUSY = "busy@example.com"


class Recorder:
    """aiosmtpd handler: refuses two special recipients, records everything else."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.raw: list[bytes] = []
        self.logins: list[Any] = []
        self.encrypted: list[bool] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == REFUSED:  # quoting the address, as Postfix does
            return f"550 5.1.1 <{address}>: Recipient address rejected: No such user"
        if address == BUSY:
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = BytesParser(policy=default).parsebytes(envelope.original_content)
        self.received.append((list(envelope.rcpt_tos), parsed))
        self.raw.append(envelope.original_content)
        self.logins.append(session.auth_data)
        self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 Message accepted"


def run_smtp_server(**options: Any) -> Iterator[tuple[Controller, Recorder]]:
    recorder = Recorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port(), **options)
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[tuple[Controller, Recorder]]:
    """With SMTPUTF8, which aiosmtpd's controller offers by default."""
    yield from run_smtp_server()


@pytest.fixture
def ascii_smtp_server() -> Iterator[tuple[Controller, Recorder]]:
    """Without SMTPUTF8 (RFC 6531), like many relays still."""
    yield from run_smtp_server(enable_SMTPUTF8=False)


def smtp_mail(
    controller: Controller, *, security: SmtpSecurity = SmtpSecurity.NONE, **options: Any
) -> SmtpMail:
    return SmtpMail(
        controller.hostname,
        controller.port,
        SENDER,
        security=security,
        timeout_seconds=5,
        **options,
    )


async def test_smtp_delivers(smtp_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = smtp_server
    settings = Settings(
        smtp_host=controller.hostname,
        smtp_port=controller.port,
        smtp_security="none",
        mail_from=SENDER,
    )
    await SmtpMail.from_settings(settings).send(activation())

    ((recipients, received),) = recorder.received
    assert recorder.encrypted == [False]  # none: plain text, as asked
    assert recipients == ["ann@example.com"]
    assert received["Subject"] == "Your activation code for Test shop"
    assert received["X-Category"] == "customer_activation"
    assert re.fullmatch(r"<[0-9a-f]{32}@shop\.test>", received["Message-ID"])
    text = received.get_body(preferencelist=("plain",))
    assert text is not None and "042137" in text.get_content().splitlines()


async def test_smtp_message_id_is_stable_per_key(smtp_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = smtp_server
    mail = smtp_mail(controller)
    await mail.send(activation(key="same"))
    await mail.send(activation(key="same"))
    await mail.send(activation(key="other"))
    ids = [received["Message-ID"] for _, received in recorder.received]
    assert ids[0] == ids[1] != ids[2]


async def test_smtp_permanent_refusal_is_invalid_request(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    controller, recorder = smtp_server
    with pytest.raises(InvalidRequest, match="550") as caught:
        await smtp_mail(controller).send(activation(to=REFUSED))
    assert caught.value.non_retryable
    assert REFUSED not in str(caught.value)  # errors go into workflow history: no addresses
    assert "Recipient address rejected" in str(caught.value)
    assert recorder.received == []


@pytest.mark.parametrize(
    "recipient", [IDN_DOMAIN, UTF8_LOCAL_PART], ids=["idn-domain-in-ascii", "utf8-local-part"]
)
async def test_smtp_sends_international_recipients(
    smtp_server: tuple[Controller, Recorder], recipient: tuple[str, str]
) -> None:
    """An IDN domain goes out in ASCII (IDNA); a UTF-8 local part with SMTPUTF8."""
    controller, recorder = smtp_server
    to, header = recipient
    await smtp_mail(controller).send(activation(to=to))

    ((recipients, received),) = recorder.received
    assert recipients == [header]
    assert received["To"] == header
    assert to_header(recorder.raw[0]) == f"To: {header}"


async def test_smtp_utf8_local_part_without_smtputf8_is_invalid_request(
    ascii_smtp_server: tuple[Controller, Recorder],
) -> None:
    """No retry can deliver it: failing at once beats retrying until the step's deadline."""
    controller, recorder = ascii_smtp_server
    with pytest.raises(InvalidRequest, match="SMTPUTF8") as caught:
        await smtp_mail(controller).send(activation(to=UTF8_LOCAL_PART[0]))
    assert caught.value.non_retryable
    assert recorder.received == []


async def test_smtp_temporary_refusal_is_retryable(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    controller, _ = smtp_server
    with pytest.raises(ProviderUnavailable, match="451") as caught:
        await smtp_mail(controller).send(activation(to=BUSY))
    assert not caught.value.non_retryable


async def test_smtp_unreachable_server_is_retryable() -> None:
    mail = SmtpMail("127.0.0.1", free_port(), SENDER, security=SmtpSecurity.NONE, timeout_seconds=5)
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await mail.send(activation())


async def test_smtp_missing_starttls_is_retryable(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    """A server without STARTTLS is a configuration problem: never fall back to plain text."""
    controller, recorder = smtp_server
    mail = smtp_mail(controller, security=SmtpSecurity.STARTTLS)
    with pytest.raises(
        ProviderUnavailable, match="does not offer STARTTLS, which REGISTRATION_SMTP_SECURITY"
    ) as caught:
        await mail.send(activation())
    assert not caught.value.non_retryable
    assert recorder.received == []


@pytest.fixture
def smtp_auth_server() -> Iterator[tuple[Controller, Recorder]]:
    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"shop", b"s3cret")
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

    recorder = Recorder()
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield controller, recorder
    finally:
        controller.stop()


async def test_smtp_logs_in(smtp_auth_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = smtp_auth_server
    await smtp_mail(controller, username="shop", password=SecretStr("s3cret")).send(activation())
    assert recorder.logins == [b"shop"]


async def test_smtp_wrong_password_is_retryable(
    smtp_auth_server: tuple[Controller, Recorder],
) -> None:
    """Bad credentials are fixed in the settings, after which pending mails should still go out."""
    controller, recorder = smtp_auth_server
    mail = smtp_mail(controller, username="shop", password=SecretStr("wrong"))
    with pytest.raises(ProviderUnavailable, match="535"):
        await mail.send(activation())
    assert recorder.received == []


# SMTP over TLS: a private CA made at test time, trusted through REGISTRATION_SMTP_CA_FILE


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificates:
    return loopback_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtps_server(certificates: LoopbackCertificates) -> Iterator[tuple[Controller, Recorder]]:
    """Implicit TLS from the first byte, as on port 465."""
    yield from run_smtp_server(ssl_context=certificates.server_context())


@pytest.fixture
def starttls_server(certificates: LoopbackCertificates) -> Iterator[tuple[Controller, Recorder]]:
    """STARTTLS offered, and required before a mail, as on port 587."""
    yield from run_smtp_server(tls_context=certificates.server_context(), require_starttls=True)


async def test_smtp_implicit_tls_delivers(
    smtps_server: tuple[Controller, Recorder], certificates: LoopbackCertificates
) -> None:
    controller, recorder = smtps_server
    settings = Settings(
        smtp_host=controller.hostname,
        smtp_port=controller.port,
        smtp_security="tls",
        smtp_ca_file=certificates.ca_file,
        mail_from=SENDER,
    )
    await SmtpMail.from_settings(settings).send(activation())

    ((recipients, _),) = recorder.received
    assert recipients == ["ann@example.com"]
    assert recorder.encrypted == [True]


async def test_smtp_starttls_delivers(
    starttls_server: tuple[Controller, Recorder], certificates: LoopbackCertificates
) -> None:
    controller, recorder = starttls_server
    mail = smtp_mail(controller, security=SmtpSecurity.STARTTLS, ca_file=certificates.ca_file)
    await mail.send(activation())

    ((recipients, _),) = recorder.received
    assert recipients == ["ann@example.com"]
    assert recorder.encrypted == [True]


@pytest.mark.parametrize(
    ("security", "server"),
    [(SmtpSecurity.TLS, "smtps_server"), (SmtpSecurity.STARTTLS, "starttls_server")],
    ids=["tls", "starttls"],
)
async def test_smtp_untrusted_certificate_is_a_clear_error(
    request: pytest.FixtureRequest, security: SmtpSecurity, server: str
) -> None:
    """Without the CA file the private CA is unknown: verification stays on and says so."""
    controller, recorder = request.getfixturevalue(server)
    with pytest.raises(
        ProviderUnavailable,
        match=r"TLS certificate that is not trusted \(unable to get local issuer certificate\);"
        r" .*REGISTRATION_SMTP_CA_FILE",
    ) as caught:
        await smtp_mail(controller, security=security).send(activation())
    assert not caught.value.non_retryable  # fixed in the settings, then the mails go out
    assert recorder.received == []


async def test_smtp_certificate_for_another_name_is_not_trusted(
    smtps_server: tuple[Controller, Recorder], certificates: LoopbackCertificates
) -> None:
    """Hostname verification: the certificate chains to the trusted CA but names 127.0.0.1, not
    the localhost we asked for. Without the check, any certificate of that CA would pass for any
    relay."""
    controller, recorder = smtps_server
    mail = SmtpMail(
        "localhost",
        controller.port,
        SENDER,
        security=SmtpSecurity.TLS,
        ca_file=certificates.ca_file,
        timeout_seconds=5,
    )
    with pytest.raises(
        ProviderUnavailable,
        match=r"TLS certificate that is not trusted \(Hostname mismatch, certificate is not valid"
        r" for 'localhost'\.\)",
    ):
        await mail.send(activation())
    assert recorder.received == []


def test_smtp_ca_file_without_certificates_is_a_configuration_error(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match=r"^REGISTRATION_SMTP_CA_FILE: cannot load"):
        SmtpMail("localhost", 465, SENDER, security=SmtpSecurity.TLS, ca_file=ca_file)


# SMTP servers that misbehave: stalls and drips for the send deadline, a refused STARTTLS

GREETING = b"220 slow.test ESMTP\r\n"
EHLO_WITH_AUTH = b"250-slow.test\r\n250 AUTH PLAIN\r\n"
PASSWORD = "s3cret-Pa55"
DEADLINE_ERROR = (
    r"took longer than REGISTRATION_SMTP_SEND_DEADLINE_SECONDS \(0\.5 s\): connection aborted"
)


class ScriptedServer:
    """A loopback server that misbehaves as aiosmtpd cannot: it plays ``replies`` (the greeting,
    then one reply per line it reads), then answers nothing, or, with ``drip``, starts one more
    reply (the greeting if there are no ``replies``) that never ends: a byte every 50 ms, well
    inside any socket timeout."""

    def __init__(self, replies: list[bytes], drip: bytes | None) -> None:
        self.replies = replies
        self.drip = drip
        self.port = 0
        self.received: list[bytes] = []
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        """Set when the client closed the connection: its sending thread let go of it."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connected.set()
        dripping: asyncio.Task[None] | None = None
        try:
            for number, reply in enumerate(self.replies):
                if number:
                    self.received.append(await reader.readline())
                writer.write(reply)
                await writer.drain()
            if self.drip is not None:
                if self.replies:  # a reply to the next line, as the ones before it
                    self.received.append(await reader.readline())
                dripping = asyncio.create_task(self._drip(writer, self.drip))
            while data := await reader.read(4096):
                self.received.append(data)
        except ConnectionError:
            pass
        finally:
            if dripping is not None:
                dripping.cancel()
            writer.close()
            self.closed.set()

    @staticmethod
    async def _drip(writer: asyncio.StreamWriter, start: bytes) -> None:
        try:
            writer.write(start)
            while True:
                await asyncio.sleep(0.05)
                writer.write(b".")
                await writer.drain()
        except ConnectionError:
            pass


@asynccontextmanager
async def scripted_server(
    replies: list[bytes], drip: bytes | None = None
) -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer(replies, drip)
    server = await asyncio.start_server(scripted.serve, "127.0.0.1", 0)
    scripted.port = server.sockets[0].getsockname()[1]
    try:
        yield scripted
    finally:
        server.close()
        await server.wait_closed()
        if scripted.connected.is_set():  # the handler ends with the client's connection
            await asyncio.wait_for(scripted.closed.wait(), 10)


def slow_mail(port: int, security: SmtpSecurity, **options: Any) -> SmtpMail:
    """A socket timeout far beyond the deadline, so only the deadline can end these sends."""
    return SmtpMail(
        "127.0.0.1",
        port,
        SENDER,
        security=security,
        timeout_seconds=60,
        send_deadline_seconds=0.5,
        **options,
    )


@pytest.mark.parametrize(
    ("security", "replies", "drip"),
    [
        (SmtpSecurity.NONE, [], b"220 slow.test"),
        (SmtpSecurity.NONE, [GREETING, b"250 slow.test\r\n", b"250 OK\r\n"], None),
        (SmtpSecurity.TLS, [], None),
    ],
    ids=["greeting-dripped", "stalled-after-mail-from", "tls-handshake-unanswered"],
)
async def test_smtp_send_deadline_aborts_the_connection(
    security: SmtpSecurity, replies: list[bytes], drip: bytes | None
) -> None:
    """Every read gets a byte in time, or waits within its timeout: only the deadline ends the
    send, and its abort the thread's connection (the server sees it closed)."""
    async with scripted_server(replies, drip) as server, asyncio.timeout(20):
        with pytest.raises(ProviderUnavailable, match=DEADLINE_ERROR) as caught:
            await slow_mail(server.port, security).send(activation())
        await server.closed.wait()
    assert not caught.value.non_retryable


async def test_smtp_deadline_error_carries_no_credential() -> None:
    """Aborted while the server holds our login: the error names the deadline, never what was
    being said."""
    async with scripted_server([GREETING, EHLO_WITH_AUTH]) as server, asyncio.timeout(20):
        mail = slow_mail(
            server.port, SmtpSecurity.NONE, username="shop", password=SecretStr(PASSWORD)
        )
        with pytest.raises(ProviderUnavailable, match=DEADLINE_ERROR) as caught:
            await mail.send(activation())
    (login,) = (line for line in server.received if line.startswith(b"AUTH PLAIN "))
    credential = login.split()[-1].decode()
    assert PASSWORD not in str(caught.value)
    assert credential not in str(caught.value)
    assert caught.value.__cause__ is None


async def test_smtp_cancelled_send_lets_go_of_its_connection() -> None:
    """asyncio cannot stop the sending thread: a cancelled send (the worker shutting down) ends
    it by aborting its connection, instead of leaving it with the server until the deadline."""
    async with scripted_server([]) as server, asyncio.timeout(20):
        mail = SmtpMail(
            "127.0.0.1", server.port, SENDER, security=SmtpSecurity.NONE, timeout_seconds=60
        )
        sending = asyncio.create_task(mail.send(activation()))
        await server.connected.wait()
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        await asyncio.wait_for(server.closed.wait(), 5)  # the deadline is 25 s away


async def test_smtp_refused_starttls_sends_nothing() -> None:
    """STARTTLS offered but refused (454): the send fails rather than go on in plain text."""
    replies = [
        GREETING,
        b"250-slow.test\r\n250 STARTTLS\r\n",
        b"454 4.7.0 TLS not available due to temporary reason\r\n",
        b"221 2.0.0 Bye\r\n",
    ]
    async with scripted_server(replies) as server:
        mail = SmtpMail("127.0.0.1", server.port, SENDER, timeout_seconds=5)
        with pytest.raises(ProviderUnavailable, match=r"refused STARTTLS: 454 4\.7\.0") as caught:
            await mail.send(activation())
    assert not caught.value.non_retryable
    assert [line.split()[0].upper() for line in server.received] == [b"EHLO", b"STARTTLS", b"QUIT"]


TRUNCATED_EHLO = b"250-slow.test\r\n250-PIPELINING\r\n250 S"
"""An EHLO reply whose last line the deadline cuts short: ``smtplib`` takes a last line without
its CRLF at the end of the connection for a complete reply, one without SMTPUTF8 and STARTTLS."""


@pytest.mark.parametrize(
    ("security", "to"),
    [(SmtpSecurity.NONE, UTF8_LOCAL_PART[0]), (SmtpSecurity.STARTTLS, "ann@example.com")],
    ids=["smtputf8-check", "starttls-check"],
)
async def test_smtp_reply_cut_short_by_the_deadline_is_the_deadline_error(
    security: SmtpSecurity, to: str
) -> None:
    """Nothing read after the abort is judged: a truncated EHLO reply must not fail the
    registration for good ("no SMTPUTF8", non-retryable), nor advise implicit TLS ("does not
    offer STARTTLS")."""
    async with scripted_server([GREETING], TRUNCATED_EHLO) as server, asyncio.timeout(20):
        with pytest.raises(ProviderUnavailable, match=DEADLINE_ERROR) as caught:
            await slow_mail(server.port, security).send(activation(to=to))
    assert not caught.value.non_retryable
    assert [line.split()[0].upper() for line in server.received] == [b"EHLO"]


async def test_smtp_session_rejection_leaves_out_the_password() -> None:
    """A server that quotes what it was given in its refusal of our login: the reply goes into
    the error (workflow history), the password does not."""
    replies = [
        GREETING,
        EHLO_WITH_AUTH,
        f"535 5.7.8 Authentication failed for shop / {PASSWORD}\r\n".encode(),
        b"221 2.0.0 Bye\r\n",
    ]
    async with scripted_server(replies) as server:
        mail = SmtpMail(
            "127.0.0.1",
            server.port,
            SENDER,
            security=SmtpSecurity.NONE,
            username="shop",
            password=SecretStr(PASSWORD),
            timeout_seconds=5,
        )
        with pytest.raises(ProviderUnavailable, match=r"rejected the session: .*535") as caught:
            await mail.send(activation())
    assert PASSWORD not in str(caught.value)
    assert "Authentication failed for shop / ***" in str(caught.value)


@pytest.fixture
def unanswered_address() -> Iterator[tuple[str, int]]:
    """A loopback address where a connect waits out its timeout, as at a relay behind a firewall
    that drops packets: its listener's accept queue is full, so the kernel drops further SYNs.
    Closed afterwards, it refuses the next attempt: a sending thread still connecting ends."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address: tuple[str, int] = listener.getsockname()
        queued: list[socket.socket] = []
        try:
            for _ in range(16):  # until a connect times out: how many fit is the kernel's call
                probe = socket.socket()
                probe.settimeout(0.2)
                try:
                    probe.connect(address)
                except TimeoutError:
                    probe.close()
                    break
                queued.append(probe)
            else:
                pytest.fail("the listener's accept queue never filled")
            yield address
        finally:
            for probe in queued:
                probe.close()


async def test_smtp_deadline_holds_while_connecting_to_many_addresses(
    unanswered_address: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay name with many addresses, none answering: ``socket.create_connection`` tries each
    in turn for the connect timeout (capped to the deadline), 10 s in all here, and there is no
    connection yet for the abort to shut down. The send ends at its deadline all the same."""
    host, port = unanswered_address
    resolve = socket.getaddrinfo

    def getaddrinfo(name: str, *args: Any, **kwargs: Any) -> Any:
        if name != "relay.test":
            return resolve(name, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))] * 20

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    mail = SmtpMail(
        "relay.test",
        port,
        SENDER,
        security=SmtpSecurity.NONE,
        timeout_seconds=60,
        send_deadline_seconds=0.5,
    )
    async with asyncio.timeout(5):
        with pytest.raises(ProviderUnavailable, match=DEADLINE_ERROR) as caught:
            await mail.send(activation())
    assert not caught.value.non_retryable


async def test_smtp_connect_is_capped_to_the_deadline(
    unanswered_address: tuple[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``send`` stops waiting at the deadline anyway; the cap ends the thread's connect then too,
    instead of after the 60 s timeout, so the thread does not hold a worker of the executor."""
    connect = socket.create_connection
    ended = threading.Event()

    def create_connection(*args: Any, **kwargs: Any) -> socket.socket:
        try:
            return connect(*args, **kwargs)
        finally:
            ended.set()

    monkeypatch.setattr(socket, "create_connection", create_connection)
    async with asyncio.timeout(20):
        with pytest.raises(ProviderUnavailable, match=DEADLINE_ERROR):
            await slow_mail(unanswered_address[1], SmtpSecurity.NONE).send(activation())
        assert await asyncio.to_thread(ended.wait, 10)


async def test_smtp_connection_made_after_the_abort_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Name resolution cannot be interrupted: a send cancelled meanwhile leaves its thread to
    connect afterwards. ``_Deadline.watch`` shuts that connection down before its first byte, so
    the thread given up on cannot go on to send the mail."""
    resolving = threading.Event()
    resolved = threading.Event()
    resolve = socket.getaddrinfo

    def getaddrinfo(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "relay.test":
            resolving.set()
            resolved.wait(10)
            name = "127.0.0.1"
        return resolve(name, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    replies = [GREETING, b"250 slow.test\r\n", b"250 OK\r\n", b"250 OK\r\n", b"354 Go on\r\n"]
    async with scripted_server(replies) as server, asyncio.timeout(20):
        mail = SmtpMail(
            "relay.test", server.port, SENDER, security=SmtpSecurity.NONE, timeout_seconds=5
        )
        sending = asyncio.create_task(mail.send(activation()))
        assert await asyncio.to_thread(resolving.wait, 10)
        sending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sending
        resolved.set()
        await server.closed.wait()
    assert b"".join(server.received) == b""  # not even EHLO


@pytest.mark.parametrize(
    ("start_to_close", "deadline", "error"),
    [
        (
            timedelta(seconds=1),
            60.0,
            r"took longer than 0\.9 s \(90% of the activity's 1 s start-to-close timeout, which is"
            r" less than REGISTRATION_SMTP_SEND_DEADLINE_SECONDS\): connection aborted",
        ),
        (timedelta(seconds=30), 0.5, DEADLINE_ERROR),
        (None, 0.5, DEADLINE_ERROR),
    ],
    ids=["activity-timeout-first", "setting-first", "no-activity-timeout"],
)
async def test_smtp_send_ends_before_the_activity_attempt_times_out(
    start_to_close: timedelta | None, deadline: float, error: str
) -> None:
    """Inside an activity, whichever ends first, the setting or 90% of the attempt's
    start-to-close timeout (a local activity's is 10 s, below the 25 s default), bounds the send:
    Temporal would start the next attempt beside one still sending."""
    attempt = ActivityEnvironment()
    attempt.info = dataclasses.replace(attempt.info, start_to_close_timeout=start_to_close)
    async with scripted_server([]) as server, asyncio.timeout(20):
        mail = SmtpMail(
            "127.0.0.1",
            server.port,
            SENDER,
            security=SmtpSecurity.NONE,
            timeout_seconds=60,
            send_deadline_seconds=deadline,
        )
        with pytest.raises(ProviderUnavailable, match=error) as caught:
            await attempt.run(mail.send, activation())
    assert not caught.value.non_retryable


def test_smtp_username_without_password_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="REGISTRATION_SMTP_PASSWORD"):
        SmtpMail("localhost", 25, SENDER, username="shop")


def test_sender_without_address_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="REGISTRATION_MAIL_FROM"):
        OutboxMail(tmp_path, "Our shop")


@pytest.mark.parametrize("sender", ["Shop <no-reply@bücher.example>", "Shop <no@sh\udcffop.test>"])
def test_a_sender_domain_that_is_not_ascii_is_a_configuration_error(
    tmp_path: Path, sender: str
) -> None:
    """It goes into every Message-ID. Found at the first mail, it failed every send: the second is
    an environment variable that was not valid UTF-8."""
    with pytest.raises(ConfigurationError, match="ASCII \\(IDNA\\) form"):
        OutboxMail(tmp_path, sender)
