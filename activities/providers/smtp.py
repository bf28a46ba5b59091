"""Mail provider for any SMTP relay (Postfix, SES/Mailgun/Postmark SMTP endpoints, Mailpit, ...).

Uses the blocking stdlib ``smtplib`` in a worker thread, one connection per message: mails are
rare enough that pooling would only add reconnect logic. SMTP reply classes decide retrying:
4xx and transport failures are transient (``ProviderUnavailable``); a 5xx refusal of the
recipient or the content is permanent (``InvalidRequest``). A 5xx refusal of our login or sender
is our configuration, not the message, so it stays retryable: fixing the settings and restarting
the worker within the step's schedule-to-close deadline then delivers the pending mails instead of
failing their registrations. A recipient
whose local part is not ASCII needs a server with SMTPUTF8 (RFC 6531); without it the mail cannot
be delivered by any retry, so that is ``InvalidRequest`` too. Server replies are scrubbed of
addresses (they often quote the recipient) before they go into an error.

Transport security (``REGISTRATION_SMTP_SECURITY``): ``starttls`` upgrades the connection before
anything else is said, ``tls`` speaks TLS from the first byte (SMTPS, port 465, as RFC 8314
recommends), ``none`` is plain text. The certificate is always verified, against the system's CAs
or those of ``REGISTRATION_SMTP_CA_FILE``. A server that does not offer STARTTLS, or refuses it,
fails the send instead of getting the mail (and our login) in plain text, which is just what an
attacker who strips STARTTLS from the EHLO reply wants. That failure, and an untrusted
certificate, stay retryable like a refused login: the cause is configuration (ours: a port that
expects implicit TLS, a missing CA file; or the relay's: TLS switched off) or an attacker on the
path, and once it is fixed or gone the pending mails go out. Nobody fixing it ends a registration
at the step's schedule-to-close deadline, as for an unreachable server.

Deadline (``REGISTRATION_SMTP_SEND_DEADLINE_SECONDS``, 25 s): ``smtplib``'s timeout bounds each
socket operation, not a send, so a server that drips a byte every few seconds keeps a send going
for ever. The mail activities run with a start-to-close timeout (30 s as regular activities, 10 s
as local ones, for a registration whose recorded profile has mail in-process); once it passes,
Temporal runs another attempt, which would send the mail again while the first one still talks to
the server from a thread nobody waits for. So a send ends at its deadline: the setting, or, inside
an activity, ``_ATTEMPT_SHARE`` of the attempt's start-to-close timeout when that is less. Read
from ``activity.info()`` at each send, the bound follows whichever timeout the step runs with, so
no value of the setting can outlast an attempt. The send then reports a retryable
``ProviderUnavailable`` naming the limit (no server reply, no credential in it). An abort after the
message was handed over may still deliver it, and the retry sends a second one, as after any
connection lost at that point.

How it ends (``_Deadline``): ``send`` waits for the sending thread until the deadline only, then
aborts: it calls ``shutdown(SHUT_RDWR)`` on the connection. That is the one call that wakes a
thread blocked in ``recv``, ``sendall`` or a TLS handshake on the socket at once (``close`` from
another thread does not wake it on Linux, and frees the descriptor for reuse while the thread
still uses it). The alternative, socket timeouts set to the time left, cannot bound a send: a reply
is read by many ``recv`` calls and a TLS handshake by several, each with the full timeout, and
``smtplib`` has no hook between them. The shutdown goes to a duplicate of the connection's
descriptor that the deadline owns, because ``smtplib``'s socket object is detached when TLS wraps
it (already during the handshake) and closed on errors, and a bare descriptor number could by then
name another connection. Not waiting for the thread past the deadline covers what no shutdown can
wake: name resolution (``getaddrinfo``), and connecting, where no connection exists yet and
``socket.create_connection`` tries each address of the relay in turn, each for the connect timeout
(capped to the time left when connecting starts). A thread given up on ends when those do, and
sends nothing meanwhile: a connection it makes after the abort is shut down before its first byte
(``_Deadline.watch``). Nothing it read after the abort is trusted either (``_deliver``):
``smtplib`` takes a last line cut short by the shutdown, without its CRLF, for a complete reply,
so a truncated EHLO reply would read as a server without SMTPUTF8 or STARTTLS. A cancelled send
(the worker shutting down) is given up on the same way: asyncio cannot stop a thread, but one that
has its connection stops at once without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from pydantic import SecretStr
from temporalio import activity

from activities.errors import (
    ConfigurationError,
    InvalidRequest,
    ProviderError,
    ProviderUnavailable,
    scrub,
)
from activities.providers.mime import MimeBuilder, needs_smtputf8
from activities.providers.spec import ProviderSpec
from activities.roles import MailMessage
from common.settings import Settings, SmtpSecurity, env_variable

log = logging.getLogger(__name__)

_ATTEMPT_SHARE = 0.9
"""Of an activity attempt's start-to-close timeout, the most a send may take. The rest is for the
activity's work around the send and for its result to reach Temporal before the attempt times out:
1 s of a local activity's 10 s (its timer runs in this worker), 3 s of a regular activity's 30 s
(a round trip to the server). A share rather than fixed seconds, so that it leaves a positive
deadline under any timeout."""


def _refusal(what: str, code: int, reply: bytes | str) -> InvalidRequest | ProviderUnavailable:
    detail = f"SMTP server refused the {what}: {code} {scrub(_text(reply))}"
    return InvalidRequest(detail) if 500 <= code < 600 else ProviderUnavailable(detail)


class _Deadline:
    """One send's time limit and the connections to shut down when it is up (see the module
    docstring for why this way). ``abort`` and ``release`` run on the event loop, ``time_left``
    and ``watch`` in the sending thread; the lock keeps a connection from being watched after the
    abort went by it."""

    def __init__(self, seconds: float, limit: str) -> None:
        self.seconds = seconds
        self.limit = limit
        """The deadline as its error names it: the setting, or the activity's timeout."""
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self.aborted = False

    def time_left(self, timeout: float) -> float:
        """``timeout``, or less when the deadline is nearer: a connect must not outlast it."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError("send deadline passed")
        return min(timeout, left)

    def watch(self, connection: socket.socket) -> None:
        """Called with each new connection, before a byte goes over it."""
        with self._lock:
            if self.aborted:  # the sending thread's own socket: it may shut it down itself
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.append(connection.dup())

    @property
    def passed(self) -> bool:
        """Aborted, or the time is up: a connect capped to the time left times out at the
        deadline, a moment before ``send`` gives up and aborts."""
        return self.aborted or time.monotonic() >= self._end

    def abort(self) -> None:
        """``aborted`` is set before the first shutdown, under the lock: a reply that the shutdown
        cuts short is read after it, so its reader finds ``passed`` true (see ``_deliver``), also
        when a cancel aborts the send before its time is up."""
        with self._lock:
            self.aborted = True
            for connection in self._connections:
                with contextlib.suppress(OSError):  # already closed by the peer
                    connection.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Closes the duplicates (the sending thread's own sockets are ``smtplib``'s to close).
        For a thread given up on, called after ``abort``: a connection the thread makes later is
        then shut down by ``watch`` instead of duplicated, so no duplicate outlives the send."""
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()


class _Session(smtplib.SMTP):
    """``smtplib.SMTP`` whose connections a deadline watches. ``_get_socket`` is ``smtplib``'s
    hook for making the connection (``SMTP_SSL`` and ``LMTP`` override it as well); it does what
    the original does, with the connect timeout capped and the socket handed to the deadline."""

    def __init__(self, host: str, port: int, *, timeout: float, deadline: _Deadline) -> None:
        self._deadline = deadline
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        connection = socket.create_connection(
            (host, port), self._deadline.time_left(timeout), self.source_address
        )
        connection.settimeout(timeout)  # the connect's cap is not for every later operation
        self._deadline.watch(connection)
        return connection


class _TlsSession(smtplib.SMTP_SSL, _Session):
    """Implicit TLS: ``SMTP_SSL._get_socket`` wraps what ``_Session._get_socket`` (next in the
    MRO) connected, so the deadline watches the TLS handshake as well."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        deadline: _Deadline,
        context: ssl.SSLContext,
    ) -> None:
        self._deadline = deadline
        smtplib.SMTP_SSL.__init__(self, host, port, timeout=timeout, context=context)


class SmtpMail:
    """``MailProvider`` delivering through an SMTP server, with STARTTLS or implicit TLS (or
    neither), an optional login, and a deadline per send."""

    in_process = False

    def __init__(
        self,
        host: str,
        port: int,
        mail_from: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        security: SmtpSecurity = SmtpSecurity.STARTTLS,
        ca_file: Path | None = None,
        timeout_seconds: float = 20.0,
        send_deadline_seconds: float = 25.0,
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
        self._security = security
        self._ca_file = ca_file
        self._tls = None if security is SmtpSecurity.NONE else _tls_context(ca_file)
        self._timeout = timeout_seconds
        self._send_seconds = send_deadline_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpMail:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.mail_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            security=settings.smtp_security,
            ca_file=settings.smtp_ca_file,
            timeout_seconds=settings.smtp_timeout_seconds,
            send_deadline_seconds=settings.smtp_send_deadline_seconds,
        )

    async def send(self, message: MailMessage) -> None:
        """Waits for the sending thread until the deadline only, then gives up on it (see the
        module docstring): a connection the thread has not made yet cannot be aborted."""
        email = self._mime.build(message)
        deadline = self._deadline()
        sending = asyncio.get_running_loop().run_in_executor(None, self._deliver, email, deadline)
        try:
            done, _ = await asyncio.wait([sending], timeout=deadline.seconds)
        finally:
            if not sending.done():  # the deadline is up, or the send was cancelled
                deadline.abort()
                sending.add_done_callback(_drop_outcome)
            deadline.release()  # after the abort: see ``release``
        if not done:
            raise self._too_slow(deadline)
        sending.result()
        log.info(
            "%s mail sent via %s, Message-ID %s", message.category, self.host, email["Message-ID"]
        )

    async def aclose(self) -> None:
        """Nothing to release: every send opens and closes its own connection."""

    def _deadline(self) -> _Deadline:
        """The setting, or less inside an activity whose attempt would time out first (see
        ``_ATTEMPT_SHARE``). Outside an activity (a direct call), or with no start-to-close timeout
        (None, or zero: unset), only the setting bounds the send."""
        timeout = activity.info().start_to_close_timeout if activity.in_activity() else None
        if timeout:
            share = timeout.total_seconds() * _ATTEMPT_SHARE
            if share < self._send_seconds:
                return _Deadline(
                    share,
                    f"{share:g} s ({_ATTEMPT_SHARE:.0%} of the activity's"
                    f" {timeout.total_seconds():g} s start-to-close timeout, which is less than"
                    f" {env_variable('smtp_send_deadline_seconds')})",
                )
        return _Deadline(
            self._send_seconds,
            f"{env_variable('smtp_send_deadline_seconds')} ({self._send_seconds:g} s)",
        )

    def _too_slow(self, deadline: _Deadline) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"SMTP send to {self.host}:{self.port} took longer than {deadline.limit}:"
            " connection aborted"
        )

    def _deliver(self, email: EmailMessage, deadline: _Deadline) -> None:
        """Runs in the sending thread. Every error that surfaces once the deadline ``passed`` is
        the deadline's, since it may be the deadline's doing: ``smtplib`` takes a reply cut short
        by the abort's shutdown for a complete one, and our own checks would read a truncated EHLO
        reply as a server without STARTTLS, or without SMTPUTF8 (a non-retryable
        ``InvalidRequest``); a connect capped to the time left times out at the deadline. Every
        reply cut short sees ``passed``: ``aborted`` is set before the shutdown. A reply that came
        complete keeps its meaning (a 5xx refusal stays permanent) if its error surfaces before the
        deadline; after it, ``send`` gives up on the thread at that very moment, and the deadline's
        error either way keeps the outcome from depending on which comes first. That costs at most
        a retry, which hears the reply again."""
        try:
            with self._connect(deadline) as smtp:
                if self._security is SmtpSecurity.STARTTLS:
                    self._start_tls(smtp)
                if self._username and self._password is not None:
                    smtp.login(self._username, self._password.get_secret_value())
                if needs_smtputf8(email):
                    self._require_smtputf8(smtp)
                smtp.send_message(email)
        # smtplib's errors, timeouts, TLS errors, the deadline's abort; our own checks' errors.
        except (OSError, ProviderError) as err:
            if deadline.passed:
                raise self._too_slow(deadline) from None
            if isinstance(err, ProviderError):
                raise
            raise self._failure(err) from None

    def _connect(self, deadline: _Deadline) -> smtplib.SMTP:
        if self._security is SmtpSecurity.TLS and self._tls is not None:
            return _TlsSession(
                self.host, self.port, timeout=self._timeout, deadline=deadline, context=self._tls
            )
        return _Session(self.host, self.port, timeout=self._timeout, deadline=deadline)

    def _start_tls(self, smtp: smtplib.SMTP) -> None:
        """Checked here rather than left to ``smtplib``, whose ``SMTPNotSupportedError`` would
        read as a session problem instead of naming the setting."""
        smtp.ehlo_or_helo_if_needed()
        if not smtp.has_extn("starttls"):
            raise ProviderUnavailable(
                f"SMTP server {self.host}:{self.port} does not offer STARTTLS, which"
                f" {env_variable('smtp_security')}=starttls requires (no mail goes out in plain"
                " text); a port with implicit TLS (465) needs tls"
            )
        try:
            smtp.starttls(context=self._tls)
        except smtplib.SMTPResponseException as err:  # 454 TLS not available, ...
            raise ProviderUnavailable(
                f"SMTP server {self.host}:{self.port} refused STARTTLS:"
                f" {err.smtp_code} {scrub(_text(err.smtp_error))}"
            ) from None

    def _failure(self, err: OSError) -> ProviderUnavailable | InvalidRequest:
        if isinstance(err, smtplib.SMTPRecipientsRefused):
            # One recipient per message, so this is the reply for it.
            code, reply = next(iter(err.recipients.values()))
            return _refusal("recipient", code, reply)
        if isinstance(err, smtplib.SMTPDataError):
            return _refusal("message", err.smtp_code, err.smtp_error)
        if isinstance(err, smtplib.SMTPResponseException | smtplib.SMTPNotSupportedError):
            secret = self._password.get_secret_value() if self._password else ""
            return ProviderUnavailable(
                f"SMTP server {self.host} rejected the session: {scrub(str(err), [secret])}"
            )
        if isinstance(err, ssl.SSLCertVerificationError):
            trusted = (
                f"the CAs in {env_variable('smtp_ca_file')}"
                if self._ca_file
                else f"the system's CAs (a private CA goes in {env_variable('smtp_ca_file')})"
            )
            return ProviderUnavailable(
                f"SMTP server {self.host}:{self.port} has a TLS certificate that is not trusted"
                f" ({err.verify_message}); it is checked against {trusted}"
            )
        if isinstance(err, ssl.SSLError):
            return ProviderUnavailable(
                f"TLS with SMTP server {self.host}:{self.port} failed ({err}); does the port"
                f" expect {env_variable('smtp_security')}={self._security}?"
            )
        # Timeouts, refused connections, SMTPServerDisconnected.
        return ProviderUnavailable(f"cannot reach SMTP server {self.host}:{self.port}: {err}")

    def _require_smtputf8(self, smtp: smtplib.SMTP) -> None:
        """Checked up front: ``send_message`` would raise ``SMTPNotSupportedError``, which reads
        as a session problem and would be retried, though no retry can deliver this mail."""
        smtp.ehlo_or_helo_if_needed()  # the server lists its extensions in the EHLO reply
        if not smtp.has_extn("smtputf8"):
            raise InvalidRequest(
                f"SMTP server {self.host} has no SMTPUTF8 (RFC 6531), which a recipient whose"
                " part before the @ is not ASCII needs"
            )


def _tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Made once: loading the system's CAs costs milliseconds per send. With a CA file, only its
    CAs are trusted (a private relay's), never the public ones besides."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        raise ConfigurationError(
            f"{env_variable('smtp_ca_file')}: cannot load CA certificates from {ca_file}: {err}"
        ) from None


def _drop_outcome(sending: asyncio.Future[None]) -> None:
    """Takes the outcome of a send given up on, so that asyncio does not log it as never retrieved,
    and drops it: the caller already has the deadline's error, and nothing the thread read after the
    abort can be trusted."""
    if not sending.cancelled():
        sending.exception()


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


SPEC = ProviderSpec(name="smtp", mail=lambda resources: SmtpMail.from_settings(resources.settings))
