"""Sealing secrets for the worker: the password (and a submitted activation code) travel through
Temporal only as Fernet tokens, so workflow history, the UI and a codec server never see them.

``MultiFernet`` encrypts with the newest key and opens with any, so keys rotate without breaking
registrations that are still pending.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SealError(ValueError):
    """A sealed value cannot be opened with any configured key (wrong key, or tampered)."""


class Sealer:
    def __init__(self, keys: list[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as err:
            raise SealError("sealed value cannot be opened with the configured seal keys") from err
