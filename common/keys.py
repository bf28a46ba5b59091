"""Key material: from configuration in production, generated once into ``<data_dir>/keys`` in dev.

A generated key is a convenience of the embedded stack only; the warning says so every time one is
created, so nobody ships with it by accident. Only the worker generates them (``create_dev_keys``,
at its start): everything else reads them, because a key a client made up on its own would seal
and encrypt what the worker cannot open, and the workflow would fail its task forever.
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

from common.identifiers import WorkflowIdMode
from common.settings import Settings, env_variable

log = logging.getLogger(__name__)

HMAC_KEY_BYTES = 32
"""The least an HMAC-SHA256 key may have: its output size (RFC 2104 section 3)."""


class KeyConfigError(ValueError):
    """A configured key is malformed, or an unset one has no dev key; the message names the
    setting."""


def _create_dev_key(path: Path, make: bytes) -> None:
    """Store ``make`` as the dev key at ``path`` unless one is there already.

    The file is written aside and then hard-linked into place, so processes starting together
    (workers, and clients reading it) never read a half-written file and all end up with the same
    key.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent)  # mode 0o600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(make.decode())
        os.link(tmp, path)
    except FileExistsError:
        return  # another process made it first: theirs it is
    finally:
        os.unlink(tmp)
    log.warning("generated a development key at %s; production must configure its own key", path)


def dev_key_path(data_dir: Path, name: str) -> Path:
    return data_dir / "keys" / f"{name}.key"


def stored_dev_key(data_dir: Path, name: str, variable: str) -> str:
    """The dev key ``name`` that the worker generated for ``variable``, which is unset."""
    path = dev_key_path(data_dir, name)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise KeyConfigError(
            f"{variable} is not set and there is no development key at {path}: set {variable}, or"
            f" {env_variable('data_dir')} to the data folder of the worker that generated it"
        ) from None


def create_dev_keys(settings: Settings) -> None:
    """Generate the dev keys for every key setting left unset that this deployment uses, once:
    the worker's own and those its clients read from the same data folder (the id key)."""
    unset = {
        "seal": settings.seal_key is None,
        "code": settings.code_key is None,
        "id": settings.id_key is None and settings.workflow_id_mode is WorkflowIdMode.HASHED,
        "payload": settings.encryption
        and settings.encryption_keys is None
        and settings.encryption_key_file is None,
    }
    for name, make in _DEV_KEY_MAKERS.items():
        if unset[name]:
            _create_dev_key(dev_key_path(settings.data_dir, name), make())


def _new_key() -> bytes:
    """32 random bytes in urlsafe base64: an HMAC key, or an AES-256 key."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32))


def _new_payload_key() -> bytes:
    """A ``keyid:base64urlkey`` pair of ``REGISTRATION_ENCRYPTION_KEYS`` (common/codec.py)."""
    return f"dev-{secrets.token_hex(4)}:{_new_key().decode()}".encode()


_DEV_KEY_MAKERS = {
    "seal": Fernet.generate_key,
    "code": _new_key,
    "id": _new_key,
    "payload": _new_payload_key,
}


def fernet_keys(configured: SecretStr | None, data_dir: Path, name: str = "seal") -> list[bytes]:
    """Fernet keys, newest first: ``REGISTRATION_SEAL_KEY`` may hold several, comma-separated."""
    variable = env_variable(f"{name}_key")
    raw = _configured_or_dev(configured, data_dir, name)
    keys = [part.strip().encode() for part in raw.split(",") if part.strip()]
    for key in keys:
        try:
            Fernet(key)
        except ValueError as err:
            raise KeyConfigError(f"{variable}: not a Fernet key (32 urlsafe-base64 bytes)") from err
    if not keys:
        raise KeyConfigError(f"{variable} is empty")
    return keys


def hmac_keys(configured: SecretStr | None, data_dir: Path, name: str) -> list[bytes]:
    """HMAC keys, newest first: ``REGISTRATION_<NAME>_KEY`` holds one or more (comma-separated)
    >= 32-byte keys in urlsafe base64. The newest makes digests, all check them, so a key can be
    rotated while digests made with the old one are still pending."""
    variable = env_variable(f"{name}_key")
    raw = _configured_or_dev(configured, data_dir, name)
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if not parts:
        raise KeyConfigError(f"{variable} is empty")
    keys = []
    for number, part in enumerate(parts, start=1):
        # Messages never echo a part: it is key material.
        try:
            key = urlsafe_b64_key(part)
        except ValueError as err:
            raise KeyConfigError(f"{variable}: key {number} is not urlsafe base64") from err
        if len(key) < HMAC_KEY_BYTES:
            raise KeyConfigError(f"{variable}: key {number} has fewer than {HMAC_KEY_BYTES} bytes")
        keys.append(key)
    return keys


def urlsafe_b64_key(text: str) -> bytes:
    """Key bytes from urlsafe base64, strictly, with or without its ``=`` padding.

    ``base64.urlsafe_b64decode`` drops every character outside the alphabet, so a passphrase or
    a key with stray characters would pass for a (different) key; ``validate=True`` refuses them.
    Padding is restored first because keys are often written without it (``token_urlsafe``).
    Raises ``ValueError`` (``binascii.Error``)."""
    return base64.b64decode(text + "=" * (-len(text) % 4), b"-_", validate=True)


def hmac_key(configured: SecretStr | None, data_dir: Path, name: str) -> bytes:
    """The one HMAC key of a digest that is looked up rather than checked (a hashed workflow ID
    is found by recomputing it), so it cannot rotate: a list is refused."""
    keys = hmac_keys(configured, data_dir, name)
    if len(keys) > 1:
        raise KeyConfigError(
            f"{env_variable(f'{name}_key')}: one key only; it cannot rotate while registrations"
            " started with it are pending"
        )
    return keys[0]


def _configured_or_dev(configured: SecretStr | None, data_dir: Path, name: str) -> str:
    """The configured key, or the dev key only when the setting is unset: a blank value is the
    key's own error (a missing secret must not fall back to a generated key)."""
    if configured is not None:
        return configured.get_secret_value()
    return stored_dev_key(data_dir, name, env_variable(f"{name}_key"))
