"""Key material: from configuration in production, generated once into ``<data_dir>/keys`` in dev.

A generated key is a convenience of the embedded stack only; the warning says so every time one is
created, so nobody ships with it by accident.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.fernet import Fernet
from pydantic import SecretStr

log = logging.getLogger(__name__)


class KeyConfigError(ValueError):
    """A configured key is malformed; the message names the setting."""


def dev_key(path: Path, make: bytes) -> str:
    """The dev key stored at ``path``, created from ``make`` on first use.

    The file is written aside and then hard-linked into place, so processes starting together (the
    worker and the codec server) never read a half-written file and all end up with the same key.
    """
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent)  # mode 0o600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(make.decode())
        os.link(tmp, path)
    except FileExistsError:
        return path.read_text().strip()
    finally:
        os.unlink(tmp)
    log.warning("generated a development key at %s; production must configure its own key", path)
    return make.decode()


def fernet_keys(configured: SecretStr | None, data_dir: Path, name: str = "seal") -> list[bytes]:
    """Fernet keys, newest first: ``REGISTRATION_SEAL_KEY`` may hold several, comma-separated."""
    raw = (
        configured.get_secret_value()
        if configured
        else dev_key(data_dir / "keys" / f"{name}.key", Fernet.generate_key())
    )
    keys = [part.strip().encode() for part in raw.split(",") if part.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError as err:
            raise KeyConfigError(
                f"REGISTRATION_{name.upper()}_KEY: not a Fernet key (32 urlsafe-base64 bytes)"
            ) from err
    if not keys:
        raise KeyConfigError(f"REGISTRATION_{name.upper()}_KEY is empty")
    return keys


def hmac_key(configured: SecretStr | None, data_dir: Path, name: str) -> bytes:
    """A >= 32-byte HMAC key given as urlsafe base64 (``REGISTRATION_<NAME>_KEY``)."""
    raw = (
        configured.get_secret_value()
        if configured
        else dev_key(
            data_dir / "keys" / f"{name}.key", base64.urlsafe_b64encode(secrets.token_bytes(32))
        )
    )
    try:
        key = base64.urlsafe_b64decode(raw.strip().encode())
    except ValueError as err:
        raise KeyConfigError(f"REGISTRATION_{name.upper()}_KEY: not urlsafe base64") from err
    if len(key) < 32:
        raise KeyConfigError(f"REGISTRATION_{name.upper()}_KEY: needs at least 32 bytes of key")
    return key
