"""Development keys: the worker generates them, everything else only reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from common.codec import encryption_keys
from common.converter import data_converter
from common.identifiers import WorkflowIdMode
from common.keys import KeyConfigError, create_dev_keys, fernet_keys, hmac_key
from common.settings import Settings
from starter.client import RegistrationClient

SEAL_KEY = SecretStr(Fernet.generate_key().decode())


def unset_keys(data_dir: Path, **values: Any) -> Settings:
    """Settings with every key left unset, as on a fresh clone."""
    return Settings(_env_file=None, data_dir=data_dir, **values)


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({}, "REGISTRATION_SEAL_KEY"),
        ({"seal_key": SEAL_KEY, "workflow_id_mode": WorkflowIdMode.HASHED}, "REGISTRATION_ID_KEY"),
    ],
)
async def test_a_client_never_creates_keys(
    dev_env: WorkflowEnvironment, tmp_path: Path, values: dict[str, Any], variable: str
) -> None:
    """A backend started in another folder would seal with a key of its own, get a receipt, and
    leave a workflow that fails its task forever: it must stop, naming what to configure."""
    settings = unset_keys(tmp_path, **values)
    with pytest.raises(KeyConfigError) as error:
        RegistrationClient(dev_env.client, settings)
    assert variable in str(error.value) and "REGISTRATION_DATA_DIR" in str(error.value)
    with pytest.raises(KeyConfigError, match="REGISTRATION_ENCRYPTION_KEYS"):
        data_converter(settings)
    assert not (tmp_path / "keys").exists()


async def test_clients_read_the_keys_the_worker_generated(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = unset_keys(tmp_path, workflow_id_mode=WorkflowIdMode.HASHED)
    create_dev_keys(settings)
    assert sorted(path.name for path in (tmp_path / "keys").iterdir()) == [
        "code.key",
        "id.key",
        "payload.key",
        "seal.key",
    ]
    registrations = RegistrationClient(dev_env.client, settings)
    assert registrations.registration_id("a@example.com") != "registration-a@example.com"
    keys = encryption_keys(settings)
    create_dev_keys(settings)  # a second start keeps them
    assert encryption_keys(settings) == keys


def test_the_worker_generates_only_the_keys_it_is_not_given(tmp_path: Path) -> None:
    create_dev_keys(unset_keys(tmp_path, seal_key=SEAL_KEY, encryption=False))
    assert [path.name for path in (tmp_path / "keys").iterdir()] == ["code.key"]


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_key_never_falls_back_to_a_dev_key(tmp_path: Path, blank: str) -> None:
    """Settings refuse a blank key at start-up; the loaders hold too (``model_copy`` does not
    validate): only an unset key means the dev key."""
    create_dev_keys(unset_keys(tmp_path))
    with pytest.raises(KeyConfigError, match=r"^REGISTRATION_SEAL_KEY is empty"):
        fernet_keys(SecretStr(blank), tmp_path)
    with pytest.raises(KeyConfigError, match=r"^REGISTRATION_CODE_KEY is empty"):
        hmac_key(SecretStr(blank), tmp_path, "code")
    blank_payload_keys = unset_keys(tmp_path).model_copy(
        update={"encryption_keys": SecretStr(blank)}
    )
    with pytest.raises(KeyConfigError, match=r"^REGISTRATION_ENCRYPTION_KEYS holds no key"):
        encryption_keys(blank_payload_keys)
