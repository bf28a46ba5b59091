"""Serving an ASGI app on loopback for a test: real sockets, so clients run their real HTTP code.

Also what the vendor simulators share: serving one (``serving``) or running it alone
(``standalone_parser``, ``fault_options``, ``serve_forever``; a test that starts one as a process
of its own reads what it printed with ``served``), the transport faults (``TransportFaults``,
``draw_fault``, ``hang_up``, ``cut_off``), and pointing a test's ``REGISTRATION_<VENDOR>_*``
variables at one (``point_env``). What a vendor answers stays in its own simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    import pytest


@asynccontextmanager
async def serve(app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends and give its base URL; port 0 picks a free one."""
    # IPPROTO_TCP explicitly: asyncio only disables Nagle (40 ms stalls) on sockets that say TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error
                raise RuntimeError("loopback server stopped during start-up")
            await asyncio.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


# Simulators -----------------------------------------------------------------------------------


class Simulator(Protocol):
    base_url: str
    """Where it is served (set by ``serving``)."""

    def env(self) -> dict[str, str]:
        """The ``REGISTRATION_<VENDOR>_*`` variables that point the service at it."""
        ...


Sim = TypeVar("Sim", bound=Simulator)


@asynccontextmanager
async def serving(
    sim: Sim, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Sim]:
    """Serve ``sim``'s ``app`` until the block ends, its ``base_url`` set; port 0: a free one."""
    async with serve(app, host=host, port=port) as base_url:
        sim.base_url = base_url
        yield sim


def standalone_parser(description: str, port: int) -> argparse.ArgumentParser:
    """The command line of a simulator run alone: ``--host`` and ``--port``, then its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    return parser


def json_object(text: str) -> dict[str, Any]:
    """An ``argparse`` type: a JSON object."""
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("not a JSON object")
    return value


def fault_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--seed`` and ``--faults`` for a simulator run alone that has fault switches: its own
    random's seed, and its switches from the start as a JSON object (``TransportFaults`` field
    names and the simulator's own, as its ``set_faults`` takes them)."""
    parser.add_argument("--seed", type=int, default=None, help="seeds the simulator's random")
    parser.add_argument(
        "--faults",
        type=json_object,
        default={},
        metavar="JSON",
        help='fault switches from the start, e.g. \'{"error_rate": 0.1, "seed": 1}\'',
    )
    return parser


_SERVING = re.compile(r"^.* on (?P<url>https?://\S+)$")
_VARIABLE = re.compile(r"^  (?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def serve_forever(title: str, running: AbstractAsyncContextManager[Simulator]) -> None:
    """Serve a simulator until interrupted, first printing where (``<title> on <url>``) and the
    variables to use (``  NAME=value``, a line each, then an empty line: ``served`` reads it)."""

    async def run() -> None:
        async with running as sim:
            print(f"{title} on {sim.base_url}")
            for name, value in sim.env().items():
                print(f"  {name}={value}")
            print(flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def served(output: str) -> tuple[str, dict[str, str]] | None:
    """From what ``serve_forever`` printed: the base URL and the variables, once all are out."""
    lines = iter(output.splitlines())
    for line in lines:
        if (found := _SERVING.match(line)) is not None:
            break
    else:
        return None
    env: dict[str, str] = {}
    for line in lines:
        if not line:
            return found["url"], env
        if (variable := _VARIABLE.match(line)) is not None:
            env[variable["name"]] = variable["value"]
    return None


def point_env(
    monkeypatch: pytest.MonkeyPatch, prefix: str, values: Mapping[str, str] | None = None
) -> None:
    """``prefix``'s variables (``REGISTRATION_<VENDOR>_``) as ``values`` give them (full names,
    e.g. a simulator's ``env()``), none of the developer's left over."""
    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name, value in (values or {}).items():
        monkeypatch.setenv(name, value)


# Transport faults -----------------------------------------------------------------------------


class SimulatedDrop(Exception):
    """Raised after the answer's head: uvicorn then closes the connection mid-answer."""


class _HideSimulatedDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], SimulatedDrop))


logging.getLogger("uvicorn.error").addFilter(_HideSimulatedDrops())


class Limited(Protocol):
    limit: int | None
    """At most this many faults, then no more (``None``: no limit). Counts down."""


class Recorded(Protocol):
    """What a simulator records of a request: the handler's status, and whether it was lost."""

    status: Any
    lost: bool


def json_or_text(raw: bytes) -> Any:
    """A recorded body: its JSON (``None`` if empty), or its text if it is not JSON."""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")


def recording(
    receive: Receive,
    send: Send,
    record: Recorded,
    on_body: Callable[[bytes], None],
    on_answer: Callable[[Message], None] | None = None,
) -> tuple[Receive, Send]:
    """``receive`` and ``send`` that record a request: its whole body goes to ``on_body`` (the
    simulator keeps what is not secret), the answer's status to ``record.status``, and each
    answer message to ``on_answer``, if given."""
    chunks: list[bytes] = []

    async def recording_receive() -> Message:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            on_body(b"".join(chunks))
        return message

    async def recording_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
        if on_answer is not None:
            on_answer(message)
        await send(message)

    return recording_receive, recording_send


def draw_fault(faults: Limited, draw: float, rates: Iterable[tuple[str, float]]) -> str | None:
    """The fault a ``draw`` in [0, 1) picks: the ``rates`` are consecutive slices (in this order,
    so they add up), ``None`` past them. A fault picked uses up one of ``faults.limit``; when none
    is left, ``None``."""
    bound, fault = 0.0, None
    for name, rate in rates:
        bound += rate
        if draw < bound:
            fault = name
            break
    if fault is None or faults.limit is None:
        return fault
    if faults.limit <= 0:
        return None
    faults.limit -= 1
    return fault


async def cut_off(send: Send, path: str) -> NoReturn:
    """Send an answer's head promising a body, then hang up (``SimulatedDrop``)."""
    head = [(b"content-type", b"application/json"), (b"content-length", b"64")]
    await send({"type": "http.response.start", "status": 200, "headers": head})
    raise SimulatedDrop(path)


async def hang_up(
    scope: Scope, receive: Receive, raw_send: Send, record: Recorded, handle: ASGIApp | None
) -> NoReturn:
    """Close the connection instead of answering, ``record`` marked ``lost``: with ``handle``,
    after handling the request (done, but unanswered; ``record`` gets its status), without it
    after reading the body (nothing done). ``raw_send`` is the unrecorded ``send``."""
    if handle is not None:

        async def unanswered(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]

        await handle(scope, receive, unanswered)
    else:
        while (await receive()).get("more_body"):
            pass
    record.lost = True
    await cut_off(raw_send, scope["path"])


@dataclass
class TransportFaults:
    """Misbehaviour of the requests whose path starts with ``path_prefix`` (and whose method is
    ``method``, if set): drawn at random, one draw per request, the rates in the order below (so
    they add up; keep their sum at most 1)."""

    latency_seconds: float = 0.0
    error_rate: float = 0.0
    """Fraction answered 503."""
    rate_limit_rate: float = 0.0
    """Fraction answered 429 with ``Retry-After: retry_after_seconds``."""
    retry_after_seconds: int = 1
    disconnect_rate: float = 0.0
    """Fraction whose connection is closed before the request is handled: nothing is done."""
    lost_answer_rate: float = 0.0
    """Fraction handled, then the connection closed before the answer's body: done, unanswered."""
    seed: int | None = None
    """Seeds the draws of the four rates above (``None``: the simulator's own random)."""
    limit: int | None = None
    """At most this many of those four faults, then no more (``None``: no limit). Counts down:
    ``lost_answer_rate=1.0, limit=1`` loses exactly the next answer."""
    path_prefix: str = "/"
    method: str = ""
    """Only requests with this HTTP method misbehave (``""``: any)."""
    rng: random.Random | None = field(default=None, init=False, repr=False, compare=False)
    """The draws' source when ``seed`` is set."""

    def __post_init__(self) -> None:
        if self.seed is not None:
            self.rng = random.Random(self.seed)

    def selects(self, scope: Scope) -> bool:
        return scope["path"].startswith(self.path_prefix) and (
            not self.method or scope["method"] == self.method
        )

    def draw(self, fallback: random.Random) -> str | None:
        """``"429"``, ``"503"``, ``"disconnect"``, ``"lost"`` or ``None`` (``draw_fault``)."""
        rates = [
            ("429", self.rate_limit_rate),
            ("503", self.error_rate),
            ("disconnect", self.disconnect_rate),
            ("lost", self.lost_answer_rate),
        ]
        return draw_fault(self, (self.rng or fallback).random(), rates)

    def settings(self) -> dict[str, Any]:
        """The switches as set."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
