"""Serving the API with uvicorn, as ``codec_server.py`` serves the codec: the listening socket is
bound here (a taken port is ``PortInUse`` naming ``REGISTRATION_API_PORT``), TLS files are loaded
before serving, and uvicorn's own access log and proxy-header handling are off: the app logs
requests without their query strings (a link's token), and believes ``X-Forwarded-For`` only from
``REGISTRATION_API_TRUSTED_PROXIES`` (uvicorn would believe it from 127.0.0.1 by default)."""

from __future__ import annotations

import logging
import socket

import uvicorn
from fastapi import FastAPI

from common.settings import InvalidSettings, Settings, env_variable, listening_socket

_TLS_VARIABLES = f"{env_variable('api_tls_cert_file')}, {env_variable('api_tls_key_file')}"


def config_for(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """Uvicorn's configuration for the API (without TLS files loaded: ``bound_server``)."""
    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        lifespan="off",
        ssl_certfile=settings.api_tls_cert_file,
        ssl_keyfile=settings.api_tls_key_file,
    )
    # access_log=False only empties the logger's handlers, and uvicorn logs to it whenever it
    # has any (a handler added later, e.g. on the root logger with propagation back on).
    logging.getLogger("uvicorn.access").disabled = True
    return config


def bound_server(app: FastAPI, settings: Settings) -> tuple[uvicorn.Server, socket.socket]:
    config = config_for(app, settings)
    try:
        config.load()
    except OSError as err:  # ssl.SSLError included
        raise InvalidSettings(f"{_TLS_VARIABLES}: cannot serve HTTPS with them: {err}") from None
    listener = listening_socket(settings.api_host, settings.api_port, "api_port")
    return uvicorn.Server(config), listener


def server_url(settings: Settings) -> str:
    scheme = "https" if settings.api_tls_cert_file is not None else "http"
    host = settings.api_host
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{settings.api_port}"
