"""Mail provider that writes each message as an ``.eml`` file into a folder: for development/tests.

Files open in any mail client. A file's name is a digest of the idempotency key, so a retried send
finds the first delivery and leaves it alone (one file per key, even if two attempts race, since
the final rename targets the same name). Writes are atomic: a reader never sees half a message.
Order of delivery is the files' modification time (``ls -t``).

This is the development mail provider, so a write is not fsynced: a crash of the worker cannot
lose a mail (``write`` has handed it to the kernel before the activity returns), a power cut can
lose the newest ones, which is what the ``resend`` signal is for. Without the fsync a write is a
handful of page-cache system calls (~35 us, measured), cheaper than handing it to a thread and
back, so the whole send (the message included: ~0.05 ms of Python with ``MimeBuilder.as_bytes``,
which would hold the GIL on any thread) runs on the event loop. The SMTP provider is the one for
real deployments.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from activities.errors import ConfigurationError, ProviderUnavailable
from activities.providers.mime import MimeBuilder, key_digest
from activities.providers.spec import ProviderSpec, Resources
from activities.roles import MailMessage
from common.settings import env_variable

log = logging.getLogger(__name__)


class OutboxMail:
    """``MailProvider`` writing RFC 5322 files (CRLF line endings) into ``outbox_dir``."""

    in_process = True

    def __init__(self, outbox_dir: Path, mail_from: str) -> None:
        self.outbox_dir = outbox_dir
        self._mime = MimeBuilder(mail_from)

    async def send(self, message: MailMessage) -> None:
        path = self._write(message)
        log.info("%s mail in outbox: %s", message.category, path)

    async def aclose(self) -> None:
        """Nothing to release: every send opens and closes its own file."""

    def check_writable(self) -> None:
        """Create the folder and write a file into it, at start-up: a folder that cannot take
        mail is a ``ConfigurationError`` naming the setting then. Found only when a mail is sent,
        it would be retried without end while the worker says it is ready and registrations
        wait in ``starting``."""
        try:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.outbox_dir):
                pass
        except OSError as err:
            raise ConfigurationError(
                f"{env_variable('outbox_dir')}: cannot write mail to {self.outbox_dir}:"
                f" {err.strerror}"
            ) from None

    def _write(self, message: MailMessage) -> Path:
        target = self.outbox_dir / f"{key_digest(message.idempotency_key)}.eml"
        try:
            self.outbox_dir.mkdir(parents=True, exist_ok=True)
            if target.exists():
                return target
            data, _ = self._mime.as_bytes(message)
            fd, temp = tempfile.mkstemp(dir=self.outbox_dir, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                os.replace(temp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        except OSError as err:
            raise ProviderUnavailable(f"cannot write to outbox {self.outbox_dir}: {err}") from None
        return target


def _outbox(resources: Resources) -> OutboxMail:
    settings = resources.settings
    outbox = OutboxMail(settings.outbox_path, settings.mail_from)
    outbox.check_writable()
    return outbox


SPEC = ProviderSpec(name="outbox", mail=_outbox)
