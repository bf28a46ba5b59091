"""Configuration shared by the worker, the starter and the tools.

Every setting comes from the environment (prefix ``REGISTRATION_``) or a ``.env`` file in the
working directory; ``load_settings`` names the offending variable when a value is invalid.
Secrets (keys, passwords) are ``SecretStr`` so they never show up in a repr or a log line.
Connection settings for Temporal itself are not here: they come from ``temporalio.envconfig``
(``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, TLS, API key), see ``common/temporal.py``.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Self

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

if TYPE_CHECKING:
    from workflows.models import RegistrationPolicy


class WorkflowIdMode(StrEnum):
    """How a registration's workflow ID is derived from the canonical email."""

    EMAIL = "email"
    """``registration-<canonical email>``: readable in the Temporal UI."""
    HASHED = "hashed"
    """``registration-<keyed hash>``: keeps PII out of workflow IDs (and search attributes)."""


class Settings(BaseSettings):
    """All knobs of the service, with the embedded defaults."""

    model_config = SettingsConfigDict(
        env_prefix="REGISTRATION_", env_file=".env", extra="ignore", validate_default=True
    )

    task_queue: str = "registrations"
    data_dir: Path = Path(".data")
    """Where the embedded stack keeps its state: SQLite files, outbox, generated dev keys."""

    # Providers, chosen per role.
    identity_provider: str = "local"
    customers_provider: str = "local"
    mail_provider: str = "outbox"

    database: Path | None = None
    """SQLite file of the local identity/customers provider (``<data_dir>/directory.sqlite3``)."""
    outbox_dir: Path | None = None
    """Folder of the ``outbox`` mail provider (default ``<data_dir>/outbox``)."""

    # Keys. Left empty, the embedded stack generates dev keys under <data_dir>/keys on first use.
    seal_key: SecretStr | None = None
    """Fernet key(s), comma-separated, newest first: seals passwords (and codes) for the worker."""
    code_key: SecretStr | None = None
    """HMAC key for activation codes and link tokens (>= 32 bytes, urlsafe base64)."""
    id_key: SecretStr | None = None
    """HMAC key for ``workflow_id_mode=hashed``."""
    workflow_id_mode: WorkflowIdMode = WorkflowIdMode.EMAIL

    # Registration policy (copied into each workflow's input, so a running workflow keeps its own).
    # Bounds: those of ``RegistrationPolicy``, checked by ``_policy_in_bounds``.
    activation_ttl: timedelta = timedelta(hours=24)
    max_attempts_per_code: int = 5
    max_attempts_total: int = 20
    max_resends: int = 5
    resend_interval: timedelta = timedelta(minutes=1)
    customer_number_prefix: str = "CUST"

    # Password policy (NIST SP 800-63B: length and blocklist, no composition rules).
    password_min_length: int = Field(8, ge=8)
    password_max_length: int = Field(128, ge=64, le=1024)

    # Mail content.
    shop_name: str = "Our shop"
    mail_from: str = "Our shop <no-reply@shop.localhost>"
    activation_link_base: str | None = None
    """If set, activation mails also carry a link ``<base>?email=..&token=..`` (192-bit token)."""
    password_reset_url: str = "http://localhost:8000/password-reset"  # noqa: S105 (a URL)

    # SMTP (mail_provider=smtp).
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = 20.0

    # Visibility for support staff.
    search_attributes: bool = True
    """Set RegistrationStatus/RegistrationEmail/CustomerNumber/ActivationExpiresAt (they must be
    registered on the namespace; the embedded dev server does it)."""
    metrics_bind_address: str | None = "127.0.0.1:9464"
    """Prometheus endpoint of the worker (``/metrics``); empty to turn it off."""

    # Embedded Temporal dev server (worker.py --dev).
    dev_server_port: int = 7233
    dev_ui_port: int = 8233

    # Payload encryption (common/codec.py): everything Temporal stores is AES-256-GCM ciphertext.
    encryption: bool = True
    """Encrypt payloads with ``EncryptionCodec``; off only for debugging against a plain history."""
    encryption_keys: SecretStr | None = None
    """``keyid:base64urlkey`` pairs (32-byte keys), comma-separated, newest first."""
    encryption_key_file: Path | None = None
    """File with the same pairs, one per line, newest first (instead of ``encryption_keys``)."""

    # Codec server (codec_server.py) that lets the Temporal UI and CLI read encrypted payloads.
    codec_server_host: str = "127.0.0.1"
    codec_server_port: int = 8081
    codec_server_origins: list[str] = ["http://localhost:8233", "http://127.0.0.1:8233"]
    """Browser origins (the Temporal UI) allowed to call the codec server, credentials included."""
    codec_server_token: SecretStr | None = None
    """If set, callers must send ``Authorization: Bearer <token>``."""

    def registration_policy(self, activation_ttl: timedelta | None = None) -> RegistrationPolicy:
        """The limits a registration copies at start (``activation_ttl`` overrides the configured
        one), validated by the workflow's own model."""
        # Imported here: workflows.models imports common.identifiers, which imports this module.
        from workflows.models import RegistrationPolicy

        fields = self.model_dump(include=set(RegistrationPolicy.model_fields))
        if activation_ttl is not None:
            fields["activation_ttl"] = activation_ttl
        return RegistrationPolicy.model_validate(fields)

    @model_validator(mode="after")
    def _policy_in_bounds(self) -> Self:
        """Refuse at start-up what every registration would refuse later (a zero TTL, say), once
        the fields parse. The policy's errors keep their field names: errors of these settings."""
        self.registration_policy()
        return self

    @property
    def database_path(self) -> Path:
        return self.database or self.data_dir / "directory.sqlite3"

    @property
    def outbox_path(self) -> Path:
        return self.outbox_dir or self.data_dir / "outbox"


class InvalidSettings(ValueError):
    """An invalid setting; the message names its environment variable, as the operator set it."""


def env_variable(field: str) -> str:
    """The variable a setting is read from (no setting has an alias), as it is written."""
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


def load_settings() -> Settings:
    """The settings of a process's start-up. Invalid values raise ``InvalidSettings`` naming their
    variables: pydantic names only the field (``activation_ttl``), not what to fix."""
    try:
        return Settings()
    except ValidationError as err:
        problems = [
            f"{env_variable(str(error['loc'][0]))}: {error['msg']}" for error in err.errors()
        ]
        raise InvalidSettings("; ".join(problems)) from None
    except SettingsError as err:  # a list setting that is not JSON; the message names the field
        raise InvalidSettings(str(err)) from None
