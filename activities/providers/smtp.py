"""Mail provider for any SMTP relay (Postfix, SES/Mailgun/Postmark SMTP endpoints, Mailpit, ...).

Uses the blocking stdlib ``smtplib`` in a worker thread, one connection per message: mails are
rare enough that pooling would only add reconnect logic. SMTP reply classes decide retrying:
4xx and transport failures are transient (``ProviderUnavailable``); a 5xx refusal of the
recipient or the content is permanent (``InvalidRequest``). A 5xx refusal of our login or sender
is our configuration, not the message, so it stays retryable: fixing the settings and restarting
the worker then delivers the pending mails instead of failing their registrations. A recipient
whose local part is not ASCII needs a server with SMTPUTF8 (RFC 6531); without it the mail cannot
be delivered by any retry, so that is ``InvalidRequest`` too. Server replies are scrubbed of
addresses (they often quote the recipient) before they go into an error.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage

from pydantic import SecretStr

from activities.errors import ConfigurationError, InvalidRequest, ProviderUnavailable, scrub
from activities.providers.mime import MimeBuilder, needs_smtputf8
from activities.roles import MailMessage
from common.settings import Settings

log = logging.getLogger(__name__)


def _refusal(what: str, code: int, reply: bytes | str) -> InvalidRequest | ProviderUnavailable:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    detail = f"SMTP server refused the {what}: {code} {scrub(text)}"
    return InvalidRequest(detail) if 500 <= code < 600 else ProviderUnavailable(detail)


class SmtpMail:
    """``MailProvider`` delivering through an SMTP server, with optional STARTTLS and login."""

    in_process = False

    def __init__(
        self,
        host: str,
        port: int,
        mail_from: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        starttls: bool = True,
        timeout_seconds: float = 20.0,
    ) -> None:
        if username and password is None:
            raise ConfigurationError(
                "REGISTRATION_SMTP_PASSWORD is required when REGISTRATION_SMTP_USERNAME is set"
            )
        self.host = host
        self.port = port
        self._mime = MimeBuilder(mail_from)
        self._username = username
        self._password = password
        self._starttls = starttls
        self._timeout = timeout_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMail:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout_seconds=settings.smtp_timeout_seconds,
        )

    async def send(self, message: MailMessage) -> None:
        email = self._mime.build(message)
        await asyncio.to_thread(self._deliver, email)
        log.info(
            "%s mail sent via %s, Message-ID %s", message.category, self.host, email["Message-ID"]
        )

    async def aclose(self) -> None:
        """Nothing to release: every send opens and closes its own connection."""

    def _deliver(self, email: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self._username and self._password is not None:
                    smtp.login(self._username, self._password.get_secret_value())
                if needs_smtputf8(email):
                    self._require_smtputf8(smtp)
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as err:
            # One recipient per message, so this is the reply for it.
            code, reply = next(iter(err.recipients.values()))
            raise _refusal("recipient", code, reply) from None
        except smtplib.SMTPDataError as err:
            raise _refusal("message", err.smtp_code, err.smtp_error) from None
        except (smtplib.SMTPResponseException, smtplib.SMTPNotSupportedError) as err:
            raise ProviderUnavailable(
                f"SMTP server {self.host} rejected the session: {scrub(str(err))}"
            ) from None
        except OSError as err:  # includes timeouts, TLS errors and SMTPServerDisconnected
            raise ProviderUnavailable(
                f"cannot reach SMTP server {self.host}:{self.port}: {err}"
            ) from None

    def _require_smtputf8(self, smtp: smtplib.SMTP) -> None:
        """Checked up front: ``send_message`` would raise ``SMTPNotSupportedError``, which reads
        as a session problem and would be retried, though no retry can deliver this mail."""
        smtp.ehlo_or_helo_if_needed()  # the server lists its extensions in the EHLO reply
        if not smtp.has_extn("smtputf8"):
            raise InvalidRequest(
                f"SMTP server {self.host} has no SMTPUTF8 (RFC 6531), which a recipient whose"
                " part before the @ is not ASCII needs"
            )
