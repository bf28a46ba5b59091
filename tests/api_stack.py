"""The HTTP API served by uvicorn on a free loopback port, in the test's event loop, in front of
a test's worker stack (``tests.stack``): requests go over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from starter.http.app import create_app
from starter.http.backend import Backend
from starter.http.server import config_for
from tests.stack import Stack

STAFF_TOKEN = "staff-token-for-the-tests-0123456789"
GENEROUS = "1000/minute"


@dataclass
class Api:
    url: str
    app: FastAPI
    stack: Stack

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60, **kwargs)

    @property
    def staff(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {STAFF_TOKEN}"}


def api_settings(stack: Stack, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "api_staff_token": STAFF_TOKEN,
        "api_rate_limit_per_address": GENEROUS,
        "api_rate_limit_per_email": GENEROUS,
        **overrides,
    }
    return stack.settings.model_validate({**stack.settings.model_dump(), **values})


@contextlib.asynccontextmanager
async def serving(app: FastAPI, settings: Any, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """``app`` served as ``python -m starter.http`` serves it, on a free port of ``host``; its
    base URL."""
    listener = socket.create_server((host, 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(config_for(app, settings))
    task = asyncio.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task
        listener.close()


@contextlib.asynccontextmanager
async def running_api(stack: Stack, **overrides: Any) -> AsyncIterator[Api]:
    settings = api_settings(stack, **overrides)
    app = create_app(settings, Backend(settings, stack.client))
    async with serving(app, settings) as url:
        yield Api(url, app, stack)
