"""Mail rendering and the two mail providers, against real files and a real SMTP server."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr
from temporalio.testing import ActivityEnvironment

from activities.codes import ActivationCodes
from activities.errors import ConfigurationError, InvalidRequest, ProviderUnavailable
from activities.mail import MailActivities
from activities.models import IssueActivationInput, NoticeInput
from activities.providers.outbox import OutboxMail
from activities.providers.smtp import SmtpMail
from activities.rendering import MailRenderer
from activities.roles import MailMessage
from bench.mailbox import newest_code
from common.settings import Settings
from tests.outbox import latest_code, messages_to

SENDER = "Test shop <no-reply@shop.test>"
RESET_URL = "https://shop.test/password-reset?from=mail&x=1"
EVIL_NAME = "<script>alert(1)</script>"

renderer = MailRenderer("Test shop", RESET_URL)


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


async def test_a_rerun_of_issue_activation_mails_the_code_it_returns(tmp_path: Path) -> None:
    """A local activity run again after its workflow task was lost starts at attempt 1 again,
    with a new code: its mail must not be taken for the first run's (kept by the outbox)."""
    codes = ActivationCodes([b"k" * 32])
    mail = MailActivities(OutboxMail(tmp_path, SENDER), renderer, codes, None)
    request = IssueActivationInput(
        registration_id="registration-ann@example.com",
        sequence=1,
        email="ann@example.com",
        name="Ann",
        expires_at=datetime(2030, 1, 2, 3, 4, tzinfo=UTC),
    )
    runs = ActivityEnvironment()  # the same activity info, attempt 1, both times
    first = await runs.run(mail.issue_activation, request)
    second = await runs.run(mail.issue_activation, request)

    assert len(listing(tmp_path)) == 2
    code = latest_code(tmp_path, "ann@example.com")
    assert codes.matches(request.registration_id, second, code)
    assert first.code_digest != second.code_digest


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


# SMTP

REFUSED = "gone@example.com"
BUSY = "busy@example.com"


class Recorder:
    """aiosmtpd handler: refuses two special recipients, records everything else."""

    def __init__(self) -> None:
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.raw: list[bytes] = []
        self.logins: list[Any] = []

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
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def smtp_mail(controller: Controller, *, starttls: bool = False, **options: Any) -> SmtpMail:
    return SmtpMail(
        controller.hostname,
        controller.port,
        SENDER,
        starttls=starttls,
        timeout_seconds=5,
        **options,
    )


async def test_smtp_delivers(smtp_server: tuple[Controller, Recorder]) -> None:
    controller, recorder = smtp_server
    settings = Settings(
        smtp_host=controller.hostname,
        smtp_port=controller.port,
        smtp_starttls=False,
        mail_from=SENDER,
    )
    await SmtpMail.from_settings(settings).send(activation())

    ((recipients, received),) = recorder.received
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
    mail = SmtpMail("127.0.0.1", free_port(), SENDER, starttls=False, timeout_seconds=5)
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await mail.send(activation())


async def test_smtp_missing_starttls_is_retryable(
    smtp_server: tuple[Controller, Recorder],
) -> None:
    """A server without STARTTLS is a configuration problem: never fall back to plain text."""
    controller, recorder = smtp_server
    with pytest.raises(ProviderUnavailable, match="STARTTLS"):
        await smtp_mail(controller, starttls=True).send(activation())
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


def test_smtp_username_without_password_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="REGISTRATION_SMTP_PASSWORD"):
        SmtpMail("localhost", 25, SENDER, username="shop")


def test_sender_without_address_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="REGISTRATION_MAIL_FROM"):
        OutboxMail(tmp_path, "Our shop")
