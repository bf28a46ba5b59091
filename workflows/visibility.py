"""What support staff see of a registration in the Temporal UI and in metrics.

Search attributes let staff list registrations, e.g. ``RegistrationStatus = 'pending' AND
ActivationExpiresAt < '<in one hour>'``. They must exist on the namespace (the embedded dev
server registers them; on a real cluster: ``temporal operator search-attribute create``), so the
starter decides whether a registration uses them, and the workflow follows what it finds at start:
a registration started without them (or recorded before they existed) never upserts any.
``RegistrationEmail`` is set by the starter only, and not at all in hashed-ID mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeIndexedValueType,
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)
from temporalio.service import RPCError, RPCStatusCode

STATUS = SearchAttributeKey.for_keyword("RegistrationStatus")
EMAIL = SearchAttributeKey.for_keyword("RegistrationEmail")
CUSTOMER_NUMBER = SearchAttributeKey.for_keyword("CustomerNumber")
EXPIRES_AT = SearchAttributeKey.for_datetime("ActivationExpiresAt")
ALL = (STATUS, EMAIL, CUSTOMER_NUMBER, EXPIRES_AT)


def _kind(key: SearchAttributeKey[Any]) -> str:
    return key.indexed_value_type.name.title()


def create_commands(namespace: str, keys: Iterable[SearchAttributeKey[Any]] = ALL) -> list[str]:
    """The Temporal CLI commands that create ``keys`` on ``namespace``, one attribute per command:
    ``temporal operator search-attribute create`` takes several ``--name`` flags but creates only
    the first of them (CLI 1.9.1). Temporal Cloud takes ``cloud_command`` instead."""
    return [
        f"temporal operator search-attribute create --namespace {namespace} --name {key.name}"
        f" --type {_kind(key)}"
        for key in keys
    ]


def cloud_command(namespace: str, keys: Iterable[SearchAttributeKey[Any]] = ALL) -> str:
    """The ``tcld`` command that adds ``keys`` to a Temporal Cloud namespace (where the operator
    API cannot create them)."""
    pairs = " ".join(f"--sa {key.name}={_kind(key)}" for key in keys)
    return f"tcld namespace search-attributes add -n {namespace} {pairs}"


@dataclass(frozen=True)
class NamespaceTrouble:
    """What keeps registrations that use search attributes from running on a namespace: each
    upsert of a missing (or mistyped) attribute fails its workflow task, retried for ever, where
    neither the activation window nor the compensations run."""

    namespace: str
    missing: list[SearchAttributeKey[Any]]
    mistyped: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.mistyped)

    def __str__(self) -> str:
        problems = [f"namespace {self.namespace!r} lacks {key.name}" for key in self.missing]
        if not self.missing:
            return f"{', '.join(problems + self.mistyped)} (remove and create them again)"
        commands = create_commands(self.namespace, self.missing)
        commands.append(f"on Temporal Cloud: {cloud_command(self.namespace, self.missing)}")
        return f"{', '.join(problems + self.mistyped)} (create them: {'; '.join(commands)})"


async def namespace_trouble(client: Client) -> NamespaceTrouble | None:
    """The registration's attributes the client's namespace lacks or has with another type;
    None when the client may not list them (``PERMISSION_DENIED``: some Temporal Cloud roles)."""
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
    except RPCError as err:
        if err.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            return None
        raise
    have = {
        name: SearchAttributeIndexedValueType(kind).name.title()
        for name, kind in listed.custom_attributes.items()
    }
    return NamespaceTrouble(
        namespace=client.namespace,
        missing=[key for key in ALL if key.name not in have],
        mistyped=[
            f"{key.name} is {have[key.name]} where {_kind(key)} is needed"
            for key in ALL
            if key.name in have and have[key.name] != _kind(key)
        ],
    )


def at_start(status: str, email: str | None) -> TypedSearchAttributes:
    """The attributes a registration starts with (``email`` None keeps PII out of Temporal)."""
    pairs = [SearchAttributePair(STATUS, status)]
    if email is not None:
        pairs.append(SearchAttributePair(EMAIL, email))
    return TypedSearchAttributes(pairs)


class Visibility:
    """Keeps search attributes and metrics current as the workflow moves through its states."""

    def __init__(self) -> None:
        self._enabled = workflow.info().typed_search_attributes.get(STATUS) is not None
        meter = workflow.metric_meter()
        self._started = meter.create_counter(
            "registrations_started", "registration workflows started"
        )
        self._finished = meter.create_counter(
            "registrations_finished", "registrations ended, by final state (label: state)"
        )
        self._latency = meter.create_histogram_timedelta(
            "registration_activation_latency", "from registration start to active account", "ms"
        )

    def started(self) -> None:
        self._started.add(1)

    def pending(self, expires_at: datetime) -> None:
        self._upsert(STATUS.value_set("pending"), EXPIRES_AT.value_set(expires_at))

    def state(self, state: str) -> None:
        self._upsert(STATUS.value_set(str(state)))

    def activation_latency(self, latency: timedelta) -> None:
        self._latency.record(latency)

    def finished(self, state: str, customer_number: str | None) -> None:
        self._finished.add(1, {"state": state})
        updates = [STATUS.value_set(str(state))]
        if customer_number is not None:
            updates.append(CUSTOMER_NUMBER.value_set(customer_number))
        self._upsert(*updates)

    def next_run(self) -> TypedSearchAttributes | None:
        """The attributes of this registration's next run (continue-as-new): this run's email,
        ``starting`` again, and no customer number or expiry yet (by default the next run would
        start with this one's final status). None where this run has none."""
        if not self._enabled:
            return None
        return at_start("starting", workflow.info().typed_search_attributes.get(EMAIL))

    def _upsert(self, *updates: SearchAttributeUpdate[Any]) -> None:
        if self._enabled:
            workflow.upsert_search_attributes(list(updates))
