"""The Python API that backend services use to run registrations, addressed by email.

Everything sensitive is sealed here, before it reaches Temporal: the password, and a submitted
code. ``register`` answers with the same generic receipt whether the email is new, pending or
already an account, so the API cannot be used to find out who has an account.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from activities.providers import check_email
from common.identifiers import registration_id
from common.keys import fernet_keys, hmac_key
from common.passwords import PasswordPolicy, PasswordPolicyError
from common.sealing import Sealer
from common.settings import Settings, WorkflowIdMode
from common.temporal import connect, connect_config
from workflows import visibility
from workflows.models import (
    ActivationOutcome,
    ActivationReply,
    Approval,
    CodeSubmission,
    RegistrationInput,
    RegistrationState,
    RegistrationStatus,
    ResendOutcome,
    ResendReply,
    ResendRequest,
)
from workflows.registration import RegistrationWorkflow

UPDATE_ATTEMPTS = 5
RECEIPT_MESSAGE = (
    "If this address can be registered, an email with an activation code is on its way."
)


class InvalidInput(ValueError):
    """Bad input, named by field; nothing was started."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownRegistration(LookupError):
    """No registration exists for this email."""


class ServerUnreachable(ConnectionError):
    """The Temporal server did not take the connection; nothing was sent."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot reach the Temporal server at {address}: {reason}")
        self.address = address


class Receipt(BaseModel):
    """The same answer for every registration request."""

    registration_id: str
    message: str = RECEIPT_MESSAGE


class RegistrationClient:
    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._sealer = Sealer(fernet_keys(settings.seal_key, settings.data_dir))
        self._id_key = (
            hmac_key(settings.id_key, settings.data_dir, "id")
            if settings.workflow_id_mode is WorkflowIdMode.HASHED
            else None
        )
        self._passwords = PasswordPolicy.from_settings(settings)

    @classmethod
    async def connect(cls, settings: Settings) -> RegistrationClient:
        """Raises ``ServerUnreachable`` naming the address, where the SDK raises a bare
        ``RuntimeError``."""
        try:
            client = await connect(settings)
        except RuntimeError as err:
            raise ServerUnreachable(connect_config()["target_host"], str(err)) from None
        return cls(client, settings)

    def registration_id(self, email: str) -> str:
        return registration_id(email, self._settings.workflow_id_mode, self._id_key)

    async def register(
        self,
        *,
        email: str,
        name: str,
        password: str,
        phone: str | None = None,
        locale: str | None = None,
        profile: Mapping[str, str] | None = None,
        tenant: str | None = None,
        metadata: Mapping[str, str] | None = None,
        activation_ttl: timedelta | None = None,
    ) -> Receipt:
        """Validate, seal the password and start the workflow, or, if one is pending for this
        email, ask it to resend the code (subject to the resend throttle)."""
        registration = self._registration_input(
            email=email,
            name=name,
            password=password,
            phone=phone,
            locale=locale,
            profile=dict(profile or {}),
            tenant=tenant,
            metadata=dict(metadata or {}),
            activation_ttl=activation_ttl,
        )
        workflow_id = self.registration_id(registration.email)
        try:
            await self._client.start_workflow(
                RegistrationWorkflow.run,
                registration,
                id=workflow_id,
                task_queue=self._settings.task_queue,
                search_attributes=self._search_attributes(registration),
                static_summary=self._summary(registration),
            )
        except WorkflowAlreadyStartedError:
            try:
                await self._handle(workflow_id).signal(
                    RegistrationWorkflow.resend, ResendRequest(requested_by="repeated registration")
                )
            except RPCError as err:
                if err.status is not RPCStatusCode.NOT_FOUND:
                    raise
                # It ended in between: this request starts the next registration.
                return await self.register(
                    email=email, name=name, password=password, phone=phone, locale=locale,
                    profile=profile, tenant=tenant, metadata=metadata,
                    activation_ttl=activation_ttl,
                )  # fmt: skip
        return Receipt(registration_id=workflow_id)

    async def submit_code(self, email: str, code: str) -> ActivationReply:
        """Check a code (or link token); answers once the account is active."""
        submission = CodeSubmission(sealed_code=self._sealer.seal(code.strip()))
        try:
            return await self._update(
                email, RegistrationWorkflow.submit_activation_code, submission
            )
        except WorkflowUpdateFailedError:
            return ActivationReply(outcome=await self._closed_outcome(email))
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return ActivationReply(outcome=await self._closed_outcome(email))
            raise

    async def resend(self, email: str, requested_by: str = "customer") -> ResendReply:
        try:
            return await self._update(
                email, RegistrationWorkflow.request_resend, ResendRequest(requested_by=requested_by)
            )
        except (WorkflowUpdateFailedError, RPCError) as err:
            if isinstance(err, RPCError) and err.status is not RPCStatusCode.NOT_FOUND:
                raise
            status = await self.status(email)
            return ResendReply(outcome=ResendOutcome.NOT_PENDING, resends_left=status.resends_left)

    async def approve(self, email: str, operator: str, reason: str) -> RegistrationStatus:
        """Staff activation without a code. Raises ``InvalidInput`` unless it is pending."""
        approval = _validated(Approval, operator=operator, reason=reason)
        status = await self.status(email)
        if status.state is not RegistrationState.PENDING:
            raise InvalidInput("email", f"registration is {status.state.value}, not pending")
        await self._handle_for(email).signal(RegistrationWorkflow.approve, approval)
        return status

    async def status(self, email: str) -> RegistrationStatus:
        return await _registered(email, self._handle_for(email).query(RegistrationWorkflow.status))

    async def cancel(self, email: str, reason: str = "") -> None:
        """Cancels a running registration; its compensations undo what it did."""
        handle = self._handle_for(email)
        description = await _registered(email, handle.describe())
        if description.status is not WorkflowExecutionStatus.RUNNING:
            raise InvalidInput("email", "registration is not running")
        await handle.cancel(reason=reason)

    # -- internals -------------------------------------------------------------------------------

    def _registration_input(
        self, *, password: str, activation_ttl: timedelta | None, **fields: Any
    ) -> RegistrationInput:
        settings = self._settings
        policy = _validated(settings.registration_policy, activation_ttl=activation_ttl)
        registration = _validated(
            RegistrationInput, sealed_password=self._sealer.seal(password), policy=policy, **fields
        )
        try:
            check_email(settings, registration.canonical_email)
        except ValueError as err:
            raise InvalidInput("email", str(err)) from None
        try:
            self._passwords.check(password, context=(registration.email, registration.name))
        except PasswordPolicyError as err:
            raise InvalidInput("password", str(err).removeprefix("password: ")) from None
        return registration

    async def _update(self, email: str, update: UpdateMethodMultiParam[[Any, A], R], arg: A) -> R:
        """An update, tried again when the workflow task that took it was rejected (e.g. a cancel
        arrived meanwhile): the workflow state was rolled back, so the retry is safe."""
        for attempt in range(UPDATE_ATTEMPTS):
            try:
                return await self._handle_for(email).execute_update(update, arg)
            except RPCError as err:
                if err.status is not RPCStatusCode.FAILED_PRECONDITION:
                    raise
                if attempt == UPDATE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    def _search_attributes(self, registration: RegistrationInput) -> TypedSearchAttributes | None:
        if not self._settings.search_attributes:
            return None
        hashed = self._settings.workflow_id_mode is WorkflowIdMode.HASHED
        return visibility.at_start("starting", None if hashed else registration.canonical_email)

    def _summary(self, registration: RegistrationInput) -> str:
        """The UI's one-line summary (an encrypted payload like any other; the UI renders it as
        Markdown, hence no angle brackets)."""
        if self._settings.workflow_id_mode is WorkflowIdMode.HASHED:
            return f"Registration of {registration.name}"
        return f"Registration of {registration.name} ({registration.email})"

    def _handle_for(self, email: str) -> WorkflowHandle[Any, Any]:
        return self._handle(self.registration_id(email))

    def _handle(self, workflow_id: str) -> WorkflowHandle[Any, Any]:
        return self._client.get_workflow_handle(workflow_id)

    async def _closed_outcome(self, email: str) -> ActivationOutcome:
        """The answer of a registration that takes no more codes: activated once active (a code
        submitted again), expired, or nothing pending. An email with an account answers as a new
        one's registration would have ended: expired at the end of its window, or locked
        (nothing pending) after too many wrong codes."""
        status = await self.status(email)
        if status.state is RegistrationState.ACTIVE:  # as the workflow answers while it runs
            return ActivationOutcome.ACTIVATED
        expired = status.state is RegistrationState.EXPIRED or (
            status.state is RegistrationState.ALREADY_REGISTERED and status.attempts_left > 0
        )
        return ActivationOutcome.EXPIRED if expired else ActivationOutcome.NOT_PENDING


M = TypeVar("M", bound=BaseModel)
A = TypeVar("A")
R = TypeVar("R")


async def _registered(email: str, call: Awaitable[R]) -> R:
    """Awaits a call on the registration of ``email``; Temporal's NOT_FOUND means there is none."""
    try:
        return await call
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            raise UnknownRegistration(f"no registration for {email}") from None
        raise


def _validated(make: Callable[..., M], **fields: Any) -> M:
    """Build a model; the first validation error becomes ``InvalidInput`` naming the field."""
    try:
        return make(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or make.__name__
        raise InvalidInput(field, first["msg"]) from None
