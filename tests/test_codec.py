"""Payload encryption: what Temporal stores is opaque, authenticated, and survives key rotation."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter

from common.codec import (
    ENCODING,
    KEY_ID_METADATA,
    EncryptionCodec,
    PayloadDecryptionError,
    encryption_keys,
)
from common.converter import data_converter
from common.keys import KeyConfigError, create_dev_keys
from common.settings import Settings


class Customer(BaseModel):
    email: str
    name: str


CUSTOMER = Customer(email="alice.secret@example.com", name="Alice Secretperson")
K1 = AESGCM.generate_key(bit_length=256)
K2 = AESGCM.generate_key(bit_length=256)


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode()


def settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, **values)


def plain_payload() -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([CUSTOMER])[0]


async def test_round_trip_restores_the_model() -> None:
    codec = EncryptionCodec({"k1": K1}, "k1")
    [encrypted] = await codec.encode([plain_payload()])
    [decoded] = await codec.decode([encrypted])
    assert decoded == plain_payload()
    [value] = pydantic_data_converter.payload_converter.from_payloads([decoded], [Customer])
    assert value == CUSTOMER


async def test_ciphertext_hides_values_and_types() -> None:
    codec = EncryptionCodec({"k1": K1}, "k1")
    [encrypted] = await codec.encode([plain_payload()])
    wire = encrypted.SerializeToString()
    for secret in (b"alice.secret", b"Secretperson", b"json/plain"):
        assert secret not in wire
    assert dict(encrypted.metadata) == {"encoding": ENCODING, KEY_ID_METADATA: b"k1"}


async def test_each_encode_uses_a_fresh_nonce() -> None:
    codec = EncryptionCodec({"k1": K1}, "k1")
    first, second = await codec.encode([plain_payload(), plain_payload()])
    assert first.data[:12] != second.data[:12]
    assert first.data != second.data


async def test_rotation_keeps_old_payloads_readable() -> None:
    old = EncryptionCodec({"k1": K1}, "k1")
    rotated = EncryptionCodec({"k2": K2, "k1": K1}, "k2")
    [from_before] = await old.encode([plain_payload()])
    assert (await rotated.decode([from_before])) == [plain_payload()]
    [fresh] = await rotated.encode([plain_payload()])
    assert fresh.metadata[KEY_ID_METADATA] == b"k2"
    with pytest.raises(PayloadDecryptionError):
        await old.decode([fresh])


async def test_unencrypted_payload_passes_through_decode() -> None:
    typed_in_ui = Payload(metadata={"encoding": b"json/plain"}, data=b'{"code": "123456"}')
    codec = EncryptionCodec({"k1": K1}, "k1")
    assert await codec.decode([typed_in_ui]) == [typed_in_ui]


async def test_unknown_key_id_is_named() -> None:
    [encrypted] = await EncryptionCodec({"retired-2024": K1}, "retired-2024").encode(
        [plain_payload()]
    )
    with pytest.raises(PayloadDecryptionError, match="retired-2024") as raised:
        await EncryptionCodec({"k2": K2}, "k2").decode([encrypted])
    assert "REGISTRATION_ENCRYPTION_KEYS" in str(raised.value)


async def test_tampering_is_detected() -> None:
    # "alias" holds the same key: relabelling is caught by the key id being associated data.
    codec = EncryptionCodec({"k1": K1, "alias": K1}, "k1")
    [encrypted] = await codec.encode([plain_payload()])

    flipped = Payload()
    flipped.CopyFrom(encrypted)
    flipped.data = encrypted.data[:-1] + bytes([encrypted.data[-1] ^ 1])
    relabelled = Payload()
    relabelled.CopyFrom(encrypted)
    relabelled.metadata[KEY_ID_METADATA] = b"alias"
    truncated = Payload()
    truncated.CopyFrom(encrypted)
    truncated.data = encrypted.data[:20]

    for bad in (flipped, relabelled, truncated):
        with pytest.raises(PayloadDecryptionError, match="tampered"):
            await codec.decode([bad])


def test_codec_rejects_wrong_key_setup() -> None:
    with pytest.raises(ValueError, match="k9"):
        EncryptionCodec({"k1": K1}, "k9")
    with pytest.raises(ValueError, match="32 bytes"):
        EncryptionCodec({"k1": K1[:16]}, "k1")


def test_keys_from_setting_newest_first(tmp_path: Path) -> None:
    configured = settings(tmp_path, encryption_keys=SecretStr(f" k2:{b64(K2)} , k1:{b64(K1)},"))
    assert encryption_keys(configured) == ({"k2": K2, "k1": K1}, "k2")


def test_keys_accept_unpadded_base64(tmp_path: Path) -> None:
    configured = settings(tmp_path, encryption_keys=SecretStr(f"k1:{b64(K1).rstrip('=')}"))
    assert encryption_keys(configured) == ({"k1": K1}, "k1")


def test_keys_from_file(tmp_path: Path) -> None:
    key_file = tmp_path / "payload-keys"
    key_file.write_text(f"k2:{b64(K2)}\n\nk1:{b64(K1)}\n")
    assert encryption_keys(settings(tmp_path, encryption_key_file=key_file)) == (
        {"k2": K2, "k1": K1},
        "k2",
    )


def test_dev_key_is_generated_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        create_dev_keys(settings(tmp_path))
    keys, current = encryption_keys(settings(tmp_path))
    assert current.startswith("dev-") and len(current) == len("dev-") + 8
    assert len(keys[current]) == 32
    assert (tmp_path / "keys" / "payload.key").read_text() == f"{current}:{b64(keys[current])}"
    assert "production must configure its own key" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        create_dev_keys(settings(tmp_path))
    assert encryption_keys(settings(tmp_path)) == (keys, current)
    assert caplog.text == ""


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (f"{b64(K1)}", "not 'keyid:base64urlkey'"),
        (f"bad id:{b64(K1)}", "not 'keyid:base64urlkey'"),
        ("k1:not*base64*at*all", "not urlsafe base64"),
        (f"k1:{b64(K1[:16])}", "must be 32 bytes"),
        (f"k1:{b64(K1)},k1:{b64(K2)}", "appears twice"),
        (" , ", "holds no key"),
    ],
)
def test_malformed_keys_are_named_without_leaking(tmp_path: Path, value: str, problem: str) -> None:
    with pytest.raises(KeyConfigError, match=problem) as raised:
        encryption_keys(settings(tmp_path, encryption_keys=SecretStr(value)))
    assert "REGISTRATION_ENCRYPTION_KEYS" in str(raised.value)
    assert b64(K1) not in str(raised.value)
    assert b64(K1[:16]) not in str(raised.value)


def test_both_key_sources_is_an_error(tmp_path: Path) -> None:
    configured = settings(
        tmp_path, encryption_keys=SecretStr(f"k1:{b64(K1)}"), encryption_key_file=tmp_path / "f"
    )
    with pytest.raises(KeyConfigError, match="not both"):
        encryption_keys(configured)


async def test_converter_encrypts_only_when_enabled(tmp_path: Path) -> None:
    assert data_converter() is pydantic_data_converter
    assert data_converter(settings(tmp_path, encryption=False)) is pydantic_data_converter

    converter = data_converter(settings(tmp_path, encryption_keys=SecretStr(f"k1:{b64(K1)}")))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    [payload] = await converter.encode([CUSTOMER])
    assert payload.metadata["encoding"] == ENCODING
    assert await converter.decode([payload], [Customer]) == [CUSTOMER]
