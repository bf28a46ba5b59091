"""Payload encryption: Temporal stores only AES-256-GCM ciphertext of workflow and activity data.

Each payload is serialized whole (metadata included) and sealed with a fresh 96-bit nonce, so the
Temporal server, its database and anyone reading the history see neither values nor types. The key
id travels in the clear next to the ciphertext (and is bound to it as associated data) so that
several keys can be live at once: the newest encrypts, all of them decrypt, and rotating a key never
strands a registration that is still pending. The Temporal UI and CLI read the histories through
``codec_server.py``, which runs this same codec.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from common.keys import KeyConfigError, dev_key_path, stored_dev_key, urlsafe_b64_key
from common.settings import Settings

ENCODING = b"binary/encrypted"
"""``encoding`` metadata of an encrypted payload; anything else passes through ``decode``."""
KEY_ID_METADATA = "encryption-key-id"

_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEYS_SETTING = "REGISTRATION_ENCRYPTION_KEYS"
_FILE_SETTING = "REGISTRATION_ENCRYPTION_KEY_FILE"


class PayloadDecryptionError(ValueError):
    """An encrypted payload cannot be opened: its key is not configured, or it was altered."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM codec that encrypts with ``current_key_id`` and decrypts with any known key."""

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str) -> None:
        if current_key_id not in keys:
            raise ValueError(f"current encryption key id {current_key_id!r} is not among the keys")
        for key_id, key in keys.items():
            if len(key) != _KEY_BYTES:
                raise ValueError(f"encryption key {key_id!r}: AES-256 needs {_KEY_BYTES} bytes")
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._current_key_id = current_key_id

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._ciphers[self._current_key_id]
        key_id = self._current_key_id.encode()
        encrypted = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            sealed = cipher.encrypt(nonce, payload.SerializeToString(), key_id)
            encrypted.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=nonce + sealed
                )
            )
        return encrypted

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        # Unencrypted payloads pass: a signal typed as JSON into the Temporal UI must still arrive.
        return [
            self._decrypt(payload) if payload.metadata.get("encoding") == ENCODING else payload
            for payload in payloads
        ]

    def _decrypt(self, payload: Payload) -> Payload:
        raw_key_id = payload.metadata.get(KEY_ID_METADATA, b"")
        key_id = raw_key_id.decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload is encrypted with key id {key_id!r}, which is not configured: keep that"
                f" key (after the current one) in {_KEYS_SETTING} or {_FILE_SETTING}"
            )
        data = payload.data
        try:
            if len(data) < _NONCE_BYTES + _TAG_BYTES:
                raise InvalidTag
            plain = cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], raw_key_id)
        except InvalidTag as err:
            raise PayloadDecryptionError(
                f"payload encrypted with key id {key_id!r} fails authentication: corrupted or"
                " tampered with"
            ) from err
        return Payload.FromString(plain)


def encryption_keys(settings: Settings) -> tuple[dict[str, bytes], str]:
    """The payload keys by id and the id of the current (newest) one, from configuration.

    ``REGISTRATION_ENCRYPTION_KEYS`` (comma-separated) or ``REGISTRATION_ENCRYPTION_KEY_FILE`` (one
    per line) hold ``keyid:base64urlkey`` pairs, newest first. With neither, the dev key the worker
    generated into ``<data_dir>/keys/payload.key`` (common/keys.py).
    """
    if settings.encryption_keys is not None and settings.encryption_key_file is not None:
        raise KeyConfigError(f"set {_KEYS_SETTING} or {_FILE_SETTING}, not both")
    if settings.encryption_key_file is not None:
        path = settings.encryption_key_file
        try:
            entries: Iterable[str] = path.read_text().splitlines()
        except OSError as err:
            raise KeyConfigError(f"{_FILE_SETTING}: cannot read {path}: {err.strerror}") from err
        source = f"{_FILE_SETTING} ({path})"
    elif settings.encryption_keys is not None:
        entries = settings.encryption_keys.get_secret_value().split(",")
        source = _KEYS_SETTING
    else:
        entries = [stored_dev_key(settings.data_dir, "payload", _KEYS_SETTING)]
        source = f"{_KEYS_SETTING} (unset; dev key at {dev_key_path(settings.data_dir, 'payload')})"
    keys = _parse_pairs(entries, source)
    return keys, next(iter(keys))


def _parse_pairs(entries: Iterable[str], source: str) -> dict[str, bytes]:
    # Messages never echo an entry: it holds key material.
    keys: dict[str, bytes] = {}
    for number, entry in enumerate((e.strip() for e in entries if e.strip()), start=1):
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise KeyConfigError(
                f"{source}: entry {number} is not 'keyid:base64urlkey' (key ids use letters,"
                " digits, '.', '_', '-')"
            )
        if key_id in keys:
            raise KeyConfigError(f"{source}: key id {key_id!r} appears twice")
        try:
            key = urlsafe_b64_key(encoded)
        except ValueError as err:
            raise KeyConfigError(f"{source}: key {key_id!r} is not urlsafe base64") from err
        if len(key) != _KEY_BYTES:
            raise KeyConfigError(f"{source}: key {key_id!r} must be {_KEY_BYTES} bytes")
        keys[key_id] = key
    if not keys:
        raise KeyConfigError(f"{source} holds no key")
    return keys
