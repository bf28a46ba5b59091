"""Password policy after NIST SP 800-63B (section 3.1.1.2).

The rules are the ones NIST asks for and nothing else: a minimum and maximum length counted in
Unicode code points, no composition rules ("one digit, one symbol"), and a check against commonly
used passwords and words from the user's own data, all judged on the NFKC form that is hashed.
The CLI runs it before a workflow starts (fast feedback) and the worker runs it again before
hashing (the CLI is not the only possible client).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from common.settings import Settings

MIN_CONTEXT_WORD = 4
"""Shorter context words ("li", "bob") would reject too many good passwords by accident."""

_WORD_SEPARATORS = re.compile(r"[\W_]+")


class PasswordPolicyError(ValueError):
    """The password breaks a rule; the message names it and never contains the password."""


def normalized(password: str) -> str:
    """The password as it is checked and hashed: NFKC (NIST 800-63B), so the same password typed
    on another keyboard or OS (composed ``é`` or ``e`` plus a combining accent, fullwidth digits)
    is one password. The policy must judge exactly this form: checking NFC while hashing NFKC
    let "12345678" in fullwidth digits past the blocklist, and stored ``12345678``."""
    return unicodedata.normalize("NFKC", password)


def _fold(text: str) -> str:
    """NFKC then casefold: one spelling per password, so "PassWord" and "password" compare equal."""
    return normalized(text).casefold()


@cache
def common_passwords() -> frozenset[str]:
    """The blocklist, lower-cased, loaded once from the package data (``#`` lines are comments)."""
    text = resources.files("common.data").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        _fold(line) for line in map(str.strip, text.splitlines()) if line and line[0] != "#"
    )


def _context_words(context: Iterable[str]) -> set[str]:
    """Words of the user's data worth checking: an email's local part and each name part.

    An email contributes its whole local part and its pieces ("john.smith" -> "john.smith",
    "john", "smith"); the domain is left out (it is shared by many users).
    """
    words: set[str] = set()
    for item in context:
        folded = _fold(item).strip()
        if "@" in folded:
            folded = folded.rsplit("@", 1)[0]
            words.add(folded)
        words.update(_WORD_SEPARATORS.split(folded))
    return {word for word in words if len(word) >= MIN_CONTEXT_WORD}


@dataclass(frozen=True)
class PasswordPolicy:
    """Length limits plus blocklist and context checks; see the module docstring."""

    min_length: int = 8
    max_length: int = 128

    def __post_init__(self) -> None:
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError("password policy: need 1 <= min_length <= max_length")

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordPolicy:
        return cls(min_length=settings.password_min_length, max_length=settings.password_max_length)

    def check(self, password: str, *, context: Iterable[str] = ()) -> None:
        """Raise ``PasswordPolicyError`` naming the first broken rule; return if all pass.

        ``context`` holds the user's own data (email, full name) that the password must not
        contain.
        """
        length = len(normalized(password))
        if length < self.min_length:
            raise PasswordPolicyError(f"password: must be at least {self.min_length} characters")
        if length > self.max_length:
            raise PasswordPolicyError(f"password: must be at most {self.max_length} characters")
        folded = _fold(password)
        if folded in common_passwords():
            raise PasswordPolicyError("password: is a commonly used password")
        if any(word in folded for word in _context_words(context)):
            raise PasswordPolicyError("password: must not contain your email or name")
