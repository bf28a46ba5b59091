"""Delivering and picking up activation codes at load: one outbox folder per recipient.

``tests.outbox.latest_code`` parses every ``.eml`` file in the folder it is given to find the newest
mail to an address. In one shared outbox that is O(mails so far) per lookup, O(N^2) over a run
(measured: 143 ms per lookup at 100 mails, 1.6 s at 1,000), so at 500 registrations the load
generator would spend minutes parsing mail instead of driving registrations. So the benchmark's
worker shards the outbox: ``ShardedOutbox`` hands each message to the unchanged ``OutboxMail``
provider for a folder named after the recipient, and the load generator reads the code from
that folder (one or two files; ``newest_code``).
Everything a registration's mail costs in production (rendering, MIME, the atomic write) is
still paid in the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

from activities.providers.outbox import OutboxMail
from activities.roles import MailMessage
from tests.outbox import CODE_LINE

POLL_SECONDS = 0.005
"""How often a waiting registration looks for its mail: small against the ~10 ms of a step."""


def shard(root: Path, email: str) -> Path:
    """The folder of one recipient's mail (a digest: emails are not file names)."""
    return root / hashlib.sha256(email.lower().encode()).hexdigest()[:24]


class ShardedOutbox:
    """``MailProvider``: the outbox provider, one folder per recipient (see module docstring)."""

    in_process = True

    def __init__(self, root: Path, mail_from: str) -> None:
        self._root = root
        self._mail_from = mail_from

    async def send(self, message: MailMessage) -> None:
        await OutboxMail(shard(self._root, message.to), self._mail_from).send(message)

    async def aclose(self) -> None:
        """Nothing to release: ``OutboxMail`` opens and closes a file per message."""


def _has_mail(folder: Path) -> bool:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return False
    # ".<random>.tmp" files are deliveries in progress; a ".eml" appears whole (atomic rename).
    return any(name.endswith(".eml") for name in names)


async def wait_for(ready: Path, *, mail: bool) -> None:
    """Poll until ``ready`` exists (a marker) or holds a delivered mail (an outbox folder); the
    caller bounds the wait (``asyncio.timeout``)."""
    check = _has_mail if mail else Path.exists
    while not check(ready):  # noqa: ASYNC110 (another process writes the file: no event to await)
        await asyncio.sleep(POLL_SECONDS)


def newest_code(folder: Path) -> str:
    """The code in the newest mail of one recipient's folder: the 6-digit line of its text part.

    The load generator stands in for the customer's mail client, so it should cost the shared
    2 cores little: the ``compat32`` parser reads a mail in a tenth of the time of
    ``tests.outbox.latest_code`` (``email.policy.default``, 1.6 ms per mail measured), which the
    tests keep using to check the mails in full.
    """
    newest = max(folder.glob("*.eml"), key=lambda path: (path.stat().st_mtime_ns, path.name))
    message = message_from_bytes(newest.read_bytes(), policy=compat32)
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            text = payload.decode(part.get_content_charset() or "utf-8")
            return next(line for line in text.splitlines() if CODE_LINE.fullmatch(line))
    raise AssertionError(f"newest mail in {folder} has no text part")


async def read_code(root: Path, email: str) -> str:
    """The activation code mailed to ``email``, waiting for the mail to arrive.

    The parse runs on the event loop: ~0.2 ms of one or two small page-cache files, which holds
    up the other units' polls (every 5 ms) and calls by about that, nothing a load generator's
    timings notice. A hand-off to a thread and back cost ~0.6 ms of CPU per unit, more than the
    parse itself, on the cores the measured server and worker share; the baseline's marker check
    has no such cost, so it would also have charged the registration for the load generator.
    """
    folder = shard(root, email)
    await wait_for(folder, mail=True)
    return newest_code(folder)
