"""Settings shared by the remote (HTTP) providers: ``VendorSettings`` and ``load_vendor_settings``.

Each vendor's settings class derives from ``VendorSettings`` and sets its own prefix::

    class AcmeSettings(VendorSettings):
        model_config = SettingsConfigDict(env_prefix="REGISTRATION_ACME_")
        base_url_example: ClassVar[str] = "https://api.acme.example"

        api_key: SecretStr | None = None

It inherits ``base_url`` (checked, trailing ``/`` dropped), the connection settings every
``VendorHttp`` takes (``http_options``) and ``required``, which names the variable of a setting a
role needs but which is not set. ``load_vendor_settings(AcmeSettings)`` reads it from the
environment (and ``.env``): an invalid value, or a ``REGISTRATION_ACME_*`` variable no setting
reads (a typo would leave a default in force: ``common.settings.unknown_variables``), is a
``ConfigurationError`` naming the variable. What the vendor needs beyond that (its credentials,
their validators) stays in its own module.
"""

from __future__ import annotations

import re
from typing import ClassVar, TypedDict, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from activities.errors import ConfigurationError
from common.settings import unknown_message, unknown_variables

HTTP_URL = re.compile(r"^https?://[^/\s]+")
"""A base URL that may carry a path."""
HOST_ROOT = re.compile(r"^https?://[^/\s]+/?$")
"""A base URL that is the host root only (the vendor's paths are appended to it)."""


class HttpOptions(TypedDict):
    """The connection settings ``VendorHttp`` takes, as keyword arguments."""

    timeout_seconds: float
    connect_timeout_seconds: float
    max_connections: int


class VendorSettings(BaseSettings):
    """``REGISTRATION_<VENDOR>_*``: what every remote provider has. A subclass sets
    ``model_config = SettingsConfigDict(env_prefix="REGISTRATION_<VENDOR>_")``; the required
    settings are checked when the vendor's client is built (``required``)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    base_url_example: ClassVar[str]
    """Shown in the error for an invalid ``base_url``."""
    base_url_host_root: ClassVar[bool] = False
    """Whether ``base_url`` must be the host root; otherwise it may carry a path."""
    required_by: ClassVar[str] = "a role"
    """Who needs a required setting, in its error: ``... is required when <required_by> uses the
    <vendor> provider``."""

    base_url: str | None = None
    connect_timeout_seconds: float = Field(5.0, gt=0)
    timeout_seconds: float = Field(20.0, gt=0)
    """Read, write and pool timeout of each request."""
    max_connections: int = Field(20, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if cls.base_url_host_root:
            if not HOST_ROOT.match(url):
                raise ValueError(f"must be the host root, such as {cls.base_url_example}")
        elif not HTTP_URL.match(url):
            raise ValueError(f"must be an http(s) URL such as {cls.base_url_example}")
        return url.rstrip("/")

    @classmethod
    def env_prefix(cls) -> str:
        """``REGISTRATION_<VENDOR>_``, from ``model_config``."""
        return cls.model_config.get("env_prefix", "")

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of a setting: ``REGISTRATION_<VENDOR>_<FIELD>``."""
        return f"{cls.env_prefix()}{field.upper()}"

    @classmethod
    def provider(cls) -> str:
        """The provider's name (``REGISTRATION_<ROLE>_PROVIDER``): ``<vendor>``, lower-case."""
        return cls.env_prefix().removeprefix("REGISTRATION_").rstrip("_").lower()

    def required(self, field: str, role: str | None = None) -> str:
        """The setting's value (a secret's revealed); a ``ConfigurationError`` naming its variable
        if it is not set or empty. ``role``: who needs it, if not ``required_by``."""
        value = getattr(self, field)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not value:
            raise ConfigurationError(
                f"{self.variable(field)} is required when {role or self.required_by} uses the"
                f" {self.provider()} provider"
            )
        return str(value)

    def http_options(self) -> HttpOptions:
        """Timeouts and pool size: ``VendorHttp(vendor, base_url, **settings.http_options())``."""
        return HttpOptions(
            timeout_seconds=self.timeout_seconds,
            connect_timeout_seconds=self.connect_timeout_seconds,
            max_connections=self.max_connections,
        )


S = TypeVar("S", bound=VendorSettings)


def load_vendor_settings(cls: type[S]) -> S:
    """``cls``'s settings from the environment (and ``.env``), with an invalid value reported as a
    ``ConfigurationError`` naming its variable, and so is a variable of the prefix that names no
    setting."""
    try:
        settings = cls()
    except ValidationError as err:
        first = err.errors()[0]
        raise ConfigurationError(f"{cls.variable(str(first['loc'][0]))}: {first['msg']}") from None
    known = {cls.variable(field) for field in cls.model_fields}
    unknown = unknown_variables(cls.env_prefix(), known)
    if unknown:
        raise ConfigurationError(unknown_message(unknown, known))
    return settings
