"""Keys and settings of one benchmark run: generated per invocation, isolated per run."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet


def generated_keys() -> dict[str, str]:
    """Fresh keys, as ``tests/stack.py`` makes them: Fernet seal key, HMAC keys, AES-256 key."""

    def urlsafe32() -> str:
        return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()

    return {
        "seal_key": Fernet.generate_key().decode(),
        "code_key": urlsafe32(),
        "id_key": urlsafe32(),
        "encryption_keys": f"bench-1:{urlsafe32()}",
    }


def settings_values(root: Path, label: str, keys: dict[str, str]) -> dict[str, Any]:
    """``Settings`` arguments of one run: the embedded providers, encryption on, own data."""
    return {
        "data_dir": str(root / label),
        "task_queue": f"bench-{label}",
        "identity_provider": "local",
        "customers_provider": "local",
        "mail_provider": "outbox",
        "encryption": True,
        "search_attributes": True,
        "metrics_bind_address": "127.0.0.1:0",  # a free port: `make run` may hold the default
        **keys,
    }
