"""Reads what the ``outbox`` mail provider delivered, as a customer's mailbox would show it."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from email.utils import getaddresses
from pathlib import Path

CODE_LINE = re.compile(r"[0-9]{6}")
LINK_TOKEN = re.compile(r"[?&]token=([A-Za-z0-9_-]+)")
"""The token of an activation link (``REGISTRATION_ACTIVATION_LINK_BASE``): unpadded base64url,
which the link's query carries unescaped."""


def messages_to(outbox_dir: Path, to: str) -> list[EmailMessage]:
    """The messages addressed to ``to`` (case-insensitive), oldest first."""
    files = sorted(outbox_dir.glob("*.eml"), key=lambda path: (path.stat().st_mtime_ns, path.name))
    found = []
    for path in files:
        with path.open("rb") as file:
            message = BytesParser(policy=default).parse(file)
        # From the header's text: a parsed Address keeps the UTF-8 of an RFC 6532 header (a
        # local part that is not ASCII) as undecoded surrogates, the text has it decoded.
        addresses = getaddresses(message.get_all("To", []))
        if any(address.lower() == to.lower() for _, address in addresses):
            found.append(message)
    return found


def code_in(message: EmailMessage) -> str:
    """The code in a mail: the line of its text body that is 6 digits."""
    body = message.get_body(preferencelist=("plain",))
    assert body is not None, f"mail {message['Subject']!r} has no text part"
    codes = [line for line in body.get_content().splitlines() if CODE_LINE.fullmatch(line)]
    assert codes, f"mail {message['Subject']!r} has no line with a 6-digit code"
    return str(codes[0])


def latest_code(outbox_dir: Path, to: str) -> str:
    """The code in the newest message to ``to``."""
    messages = messages_to(outbox_dir, to)
    assert messages, f"no mail to {to} in {outbox_dir}"
    return code_in(messages[-1])


def latest_token(outbox_dir: Path, to: str) -> str:
    """The link token in the newest message to ``to``."""
    messages = messages_to(outbox_dir, to)
    assert messages, f"no mail to {to} in {outbox_dir}"
    body = messages[-1].get_body(preferencelist=("plain",))
    assert body is not None, f"mail {messages[-1]['Subject']!r} has no text part"
    found = LINK_TOKEN.search(body.get_content())
    assert found, f"mail {messages[-1]['Subject']!r} has no activation link"
    return found.group(1)
