"""The Python API that backend services use to run registrations, addressed by email.

Everything sensitive is sealed here, before it reaches Temporal: the password, and a submitted
code. ``register`` answers with the same generic receipt whether the email is new, pending or
already an account, so the API cannot be used to find out who has an account.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any, TypeVar, cast

from pydantic import AfterValidator, BaseModel, StringConstraints, TypeAdapter, ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ApplicationError, TemporalError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from common.identifiers import WorkflowIdMode, registration_id
from common.keys import KeyConfigError, fernet_keys, hmac_key
from common.passwords import PasswordPolicy, PasswordPolicyError
from common.sealing import Sealer
from common.settings import InvalidSettings, Settings, env_variable
from common.temporal import NamespaceNotFound, connect, namespace_not_found
from common.temporal import ServerUnreachable as ConnectionRefused
from workflows import visibility
from workflows.models import (
    LINK_TOKEN_BYTES,
    SEAL_MISMATCH,
    ActivationOutcome,
    ActivationReply,
    Approval,
    CodeSubmission,
    Email,
    Reason,
    RegistrationInput,
    RegistrationPolicy,
    RegistrationState,
    RegistrationStatus,
    ResendOutcome,
    ResendReply,
    ResendRequest,
    one_line,
    password_text,
)
from workflows.registration import NO_ATTEMPTS_LEFT, RegistrationWorkflow

UPDATE_ATTEMPTS = 5
CALLS_PER_EMAIL = 3
"""How many ``submit_code`` and ``resend`` calls for one email a client runs at once; a further
one is ``Busy`` at once, without an RPC. Temporal takes 10 updates in flight per workflow
(``history.maxInFlightUpdates``), beyond which it refuses every caller's, the owner's too. Not
fewer than 3: the right code's call keeps its place until the account is active, which may take
a while at a remote provider, and a double click then, and one more code (a wrong one is answered
``not_pending``), must still be answered (``tests/scenarios.py``, ``active_code_repeated``)."""
ANSWER_TIMEOUT = timedelta(seconds=30)
"""How long a query, or an update until a worker accepts it, may wait for a worker. The server
holds both until a worker polls the task queue, an update without any deadline; only accepting is
bounded, so an activation that takes its time at a remote provider is still waited for."""
RECEIPT_MESSAGE = (
    "If this address can be registered, an email with an activation code is on its way."
)

_EMAIL: TypeAdapter[str] = TypeAdapter(Email)
_REASON: TypeAdapter[str] = TypeAdapter(Reason)

_TOKEN_LENGTH = len(base64.urlsafe_b64encode(bytes(LINK_TOKEN_BYTES)).rstrip(b"="))
"""Characters of a link token: ``secrets.token_urlsafe(LINK_TOKEN_BYTES)``, unpadded base64url."""
_LINK_TOKEN = f"[A-Za-z0-9_-]{{{_TOKEN_LENGTH}}}"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]()<>!&~|])")


def _markdown_literal(text: str) -> str:
    """``text`` as Markdown that renders as the text itself. The Temporal UI renders a summary as
    Markdown, so a name such as ``[Verify here](https://evil.example)`` would show staff a link
    to anywhere. Each character that opens or closes an inline construct (emphasis, code spans,
    links and images, raw HTML and autolinks in angle brackets, entities, strikethrough, table
    cells) gets CommonMark's backslash escape, which any ASCII punctuation may have and which
    renders as the character. Block syntax (headings, lists, quotes) counts only at the start of
    a line, and a summary starts with fixed text and has one line (names refuse line breaks). A
    bare URL may still be linked by an autolinking renderer; it shows its own target."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


RequestId = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(one_line)
]
"""A caller's id of one ``submit_code`` or ``resend`` call, which its retries share. Its Temporal
update id is this id behind the update's name (``_update_id``), so a code and a resend given the
same id are two calls; two codes (or two resends) given one id are one, since Temporal answers a
repeated id with the first call's outcome whatever the repeat carries (another code). Not empty:
the SDK would replace an empty id with a random one, and a retry would count again. One line: it
shows in the workflow's history and in the Temporal UI."""
_REQUEST_ID: TypeAdapter[str] = TypeAdapter(RequestId)


class RegistrationError(Exception):
    """The base of every exception the client raises by itself, so a backend can tell the
    client's verdicts from anything else with one ``except``. Each subclass keeps the builtin or
    library base it had before (``ValueError``, ``LookupError``, ``TemporalError``,
    ``KeyConfigError``, ``ConnectionError``), so ``except`` clauses written for those still catch
    it. Errors of the configuration (``InvalidSettings``, ``NamespaceNotFound``) are raised as they
    are, and so is any other refusal of the Temporal server (``RPCError``): not an outage, which
    is ``ServerUnreachable``."""


class ServerUnreachable(RegistrationError, ConnectionRefused):
    """The Temporal server cannot be reached: at connect (nothing was sent), or during a call
    (UNAVAILABLE, a lost connection, DEADLINE_EXCEEDED: no answer in time), where the call may or
    may not have reached the server. The message ends with whether that call is safe to retry
    as it was made (``advice``, see ``_RETRY_ADVICE``); ``address`` is the server's. Also a
    ``common.temporal.ServerUnreachable`` (a ``ConnectionError``), as ``connect`` raised before."""

    def __init__(self, address: str, reason: str, advice: str = "") -> None:
        super().__init__(address, f"{reason}; once it is back, {advice}" if advice else reason)
        self.advice = advice


class Busy(RegistrationError):
    """Too many calls for one registration at once, or for the server: this client's own limit of
    ``submit_code`` and ``resend`` calls per email (``calls_per_email``: no RPC was made), or the
    server's refusal (RESOURCE_EXHAUSTED: its limit of updates in flight per workflow, or a rate
    limit; UNAVAILABLE "workflow update was aborted": the server dropped updates it had not yet
    handed to the workflow). A flood of guesses for an email ends here, not in the customer's
    own call failing for good: retry in a moment, as ``advice`` (the end of the message) says:
    ``submit_code`` and ``resend`` with the same ``request_id``, which makes a retry safe
    whether or not the first call was taken."""

    def __init__(self, reason: str, advice: str) -> None:
        super().__init__(f"busy: {reason}; retry in a moment: {advice}")
        self.advice = advice


class NoWorkerAnswered(RegistrationError, TemporalError):
    """No worker took a query or an update within ``ANSWER_TIMEOUT``: none polls the task queue
    (the worker is not running, or runs on another task queue), or all are stuck."""


class InvalidInput(RegistrationError, ValueError):
    """Bad input, named by field; nothing was started."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownRegistration(RegistrationError, LookupError):
    """No registration exists for this email."""


class NotPending(RegistrationError):
    """The registration exists, but its state does not allow the action: ``approve`` of one that
    is not pending, ``cancel`` of one whose outcome is decided or whose run has ended. Not
    ``InvalidInput``: the input was fine, and the same call may have been right a moment earlier
    (a double click, two staff members). ``state`` is the registration's state (a
    ``RegistrationState`` value), or, for a run that Temporal itself ended (terminated, timed
    out) or that kept no state in its search attributes, Temporal's status of the run
    (``terminated``, ``completed``...)."""

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state


class SealKeyMismatch(RegistrationError, KeyConfigError):
    """The worker cannot open a code this client sealed: they do not share
    ``REGISTRATION_SEAL_KEY`` (a rotation half done, or two configurations). A configuration
    error, not a wrong code: the code costs no attempt, and every code would fail alike."""


class Receipt(BaseModel):
    """The same answer for every registration request."""

    registration_id: str
    message: str = RECEIPT_MESSAGE


_RETRY_ADVICE = {
    "connect": "connect again: nothing was sent",
    "register": (
        "register is idempotent per email: call it again with the same input; at most one"
        " registration runs for the email (if this call got through, the repeat resends the"
        " code, within the resend throttle)"
    ),
    "submit_code": (
        "submit_code is safe to retry with the same request_id: a call that got through answers"
        " with its first reply and costs no second attempt (without a request_id a retry is"
        " another attempt)"
    ),
    "resend": (
        "resend is safe to retry with the same request_id: a call that got through answers with"
        " its first reply and mails no second code (without a request_id a retry is another"
        " request, subject to the throttle)"
    ),
    "status": "status is safe to retry: it changes nothing",
    "approve": (
        "approve is safe to retry: one that got through is taken once, and a retry after it"
        " took effect is NotPending"
    ),
    "cancel": (
        "cancel is safe to retry: one that got through is taken once, and a retry after the"
        " registration ended is NotPending"
    ),
}
"""Whether each call is safe to retry after ``ServerUnreachable`` or ``Busy``: the end of their
messages."""

_SERVER_UNREACHABLE = frozenset({RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED})
"""What an outage looks like during a call: UNAVAILABLE (no connection, a connection lost: the
SDK has already retried it for up to 10 s) and DEADLINE_EXCEEDED (no answer in time). A query's
own timeout is the exception (``NoWorkerAnswered``: ``_status_of``)."""
_TRANSPORT_ERROR = "transport error"
"""The message of an RPC whose connection broke under it: the server went away while the request
was being written (a broken pipe), which the SDK reports as UNKNOWN and does not retry. An outage
like UNAVAILABLE: the call may or may not have reached the server (found by the reliability suite,
``tests/reliability/test_broken_connection.py``)."""

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _outages_mapped(call: str) -> Callable[[F], F]:
    """A public call whose outage of the Temporal server is ``ServerUnreachable``, and whose
    refusal for being busy is ``Busy``, with the call's retry advice (``_RETRY_ADVICE[call]``),
    not the SDK's raw error."""
    advice = _RETRY_ADVICE[call]

    def mapping(method: F) -> F:
        @functools.wraps(method)
        async def mapped(self: RegistrationClient, *args: Any, **kwargs: Any) -> Any:
            try:
                return await method(self, *args, **kwargs)
            except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as err:
                if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError) and (
                    _cancelled_by_caller()
                ):
                    raise asyncio.CancelledError() from err
                if isinstance(err, RPCError) and _busy(err):
                    raise Busy(
                        f"the Temporal server refused the call: {err.message}", advice
                    ) from err
                outage = _outage_reason(err)
                if outage is None:
                    raise
                raise ServerUnreachable(self._address, outage, advice) from err

        return cast(F, mapped)

    return mapping


def _busy(err: RPCError) -> bool:
    """Whether the server refused the call for load, not for an outage: RESOURCE_EXHAUSTED (e.g.
    "limit on number of concurrent in-flight updates has been reached (10)", a rate limit), or an
    update it aborted before the workflow took it (UNAVAILABLE "workflow update was aborted",
    while the server is up: it drops the updates it holds for a workflow when it reloads it)."""
    return err.status is RPCStatusCode.RESOURCE_EXHAUSTED or (
        err.status is RPCStatusCode.UNAVAILABLE and "update was aborted" in err.message
    )


def _channel_reset(err: RPCError) -> bool:
    """The SDK's CANCELLED for a call on a connection that went away under it (seen on the first
    call after a minute idle), not one the caller cancelled."""
    return err.status is RPCStatusCode.CANCELLED and err.message == "operation was canceled"


def _cancelled_by_caller() -> bool:
    """Whether the task making the call is being cancelled: the SDK reports a caller's
    cancellation of an update as ``WorkflowUpdateRPCTimeoutOrCancelledError`` too."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _outage_reason(err: RPCError | WorkflowUpdateRPCTimeoutOrCancelledError) -> str | None:
    """What went wrong, if ``err`` is an outage of the server: the SDK's text (``tcp connect
    error``...). An update's start or result is one too when the SDK reports it as
    ``WorkflowUpdateRPCTimeoutOrCancelledError``: caused by the server's DEADLINE_EXCEEDED (the
    client's own deadline is ``NoWorkerAnswered``, from ``_accepted``), by an outage status, or
    by a cancellation of its RPC that the caller did not ask for (its connection went away in a
    server outage: found by the reliability suite). A caller's own cancellation stays one."""
    if isinstance(err, WorkflowUpdateRPCTimeoutOrCancelledError):
        cause = err.__cause__
        if isinstance(cause, RPCError) and cause.status is RPCStatusCode.DEADLINE_EXCEEDED:
            return f"no answer in time ({cause.message or 'deadline exceeded'})"
        if isinstance(cause, RPCError) and (_channel_reset(cause) or _outage_reason(cause)):
            return cause.message or cause.status.name.lower()
        if isinstance(cause, asyncio.CancelledError) and not _cancelled_by_caller():
            return "the call was cancelled under the client (its connection went away)"
        return None
    if err.status in _SERVER_UNREACHABLE or (
        err.status is RPCStatusCode.UNKNOWN and err.message == _TRANSPORT_ERROR
    ):
        return err.message or err.status.name.lower()
    return None


class RegistrationClient:
    def __init__(
        self,
        client: Client,
        settings: Settings,
        *,
        answer_timeout: timedelta = ANSWER_TIMEOUT,
        calls_per_email: int | None = CALLS_PER_EMAIL,
    ) -> None:
        """``calls_per_email``: how many ``submit_code`` and ``resend`` calls for one email this
        client runs at once (``CALLS_PER_EMAIL``); None for no limit."""
        if calls_per_email is not None and calls_per_email < 1:
            raise ValueError(f"calls_per_email: {calls_per_email} is not at least 1 (or None)")
        self._calls_per_email = calls_per_email
        self._calls_under_way: dict[str, int] = {}
        """Calls under way per registration id, only while there are any: bounded by the calls
        in flight, not by the emails ever seen."""
        self._client = client
        self._settings = settings
        self._submittable = re.compile(f"{settings.code_pattern}|{_LINK_TOKEN}")
        """The codes the registrations mail (``REGISTRATION_CODE_PATTERN``) and link tokens."""
        self._answer_timeout = answer_timeout
        self._sealer = Sealer(fernet_keys(settings.seal_key, settings.data_dir))
        self._id_key = (
            hmac_key(settings.id_key, settings.data_dir, "id")
            if settings.workflow_id_mode is WorkflowIdMode.HASHED
            else None
        )
        self._passwords = PasswordPolicy.from_settings(settings)
        self._search_attributes_checked = False

    @classmethod
    async def connect(cls, settings: Settings) -> RegistrationClient:
        """Raises ``ServerUnreachable`` naming the address, and ``KeyConfigError`` when a key is
        neither configured nor generated by a worker in ``settings.data_dir``."""
        try:
            client = await connect(settings)
        except ConnectionRefused as err:
            reason = str(err).split("): ", 1)[-1]
            raise ServerUnreachable(err.address, reason, _RETRY_ADVICE["connect"]) from None
        return cls(client, settings)

    @property
    def _address(self) -> str:
        return self._client.service_client.config.target_host

    def registration_id(self, email: str) -> str:
        return registration_id(email, self._settings.workflow_id_mode, self._id_key)

    @_outages_mapped("register")
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
        """Validate, seal the password and start the workflow. If one is open for this email,
        hand it this request (``register_again``): a pending one resends the code (subject to
        the resend throttle); one that only waits for its undos starts this registration once
        they are done."""
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
        await self._check_search_attributes()
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
                    RegistrationWorkflow.register_again, registration
                )
            except RPCError as err:
                if not self._not_found(err):
                    raise
                # It ended in between: this request starts the next registration.
                return await self.register(
                    email=email, name=name, password=password, phone=phone, locale=locale,
                    profile=profile, tenant=tenant, metadata=metadata,
                    activation_ttl=activation_ttl,
                )  # fmt: skip
        except RPCError as err:
            self._check_namespace(err)
            if self._settings.search_attributes and _names_search_attribute(err):
                raise self._missing_search_attributes(err) from None
            raise
        return Receipt(registration_id=workflow_id)

    @_outages_mapped("submit_code")
    async def submit_code(
        self, email: str, code: str, *, request_id: str | None = None
    ) -> ActivationReply:
        """Check a code (or link token); answers once the account is active. Input that can be
        neither is ``InvalidInput``: it never reaches the workflow, where it would cost an attempt.
        A worker that cannot open the sealed code raises ``SealKeyMismatch`` (no attempt counted).
        A code the workflow's validator refuses for want of attempts (the current code's are
        spent, or a lockout) is answered ``too_many_attempts`` as the check would answer it.

        ``request_id`` makes a retry safe: a backend that calls again after ``NoWorkerAnswered``,
        a timeout or a lost connection, with the same ``request_id``, gets the first call's reply
        instead of a second attempt counted against the code (see ``_update``). That holds within
        the registration's run, also once it has closed; once a new registration for the email
        has started (a new ``register``, also one that continued the old run as new), a repeated
        id is a new call in that registration. Use a new one for every code the customer
        submits, and one nobody can guess (a UUID the backend makes, not a value the customer
        picks): a repeated id is answered with the first reply whatever code it carries, so a
        guessed id would tell whether someone else's code activated an account. The same id
        given to a ``resend`` is another call. Without one, each call counts on its own.
        """
        if not self._submittable.fullmatch(code.strip()):
            raise InvalidInput("code", "not an activation code or link token")
        update_id = _update_id(RegistrationWorkflow.submit_activation_code, request_id)
        submission = CodeSubmission(sealed_code=self._sealer.seal(code.strip()))
        try:
            return await self._update(
                "submit_code",
                email,
                RegistrationWorkflow.submit_activation_code,
                submission,
                update_id,
            )
        except WorkflowUpdateFailedError as err:
            if _seal_mismatch(err):
                variable = env_variable("seal_key")
                raise SealKeyMismatch(
                    f"{variable}: the worker cannot open the code this client sealed: the starter"
                    f" and the worker must share {variable} (the worker's keys must include the"
                    " first of this client's); the code was not counted"
                ) from None
            if _no_attempts_left(err):
                return ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
            return ActivationReply(outcome=await self._closed_outcome(email))
        except RPCError as err:
            if not self._not_found(err):
                raise
        # The run has closed (or never was): only an expiry is told, which a registration for an
        # email with an account also ends with; anything else reads as an unknown email.
        try:
            outcome = await self._closed_outcome(email)
        except UnknownRegistration:
            outcome = ActivationOutcome.NOT_PENDING
        if outcome is not ActivationOutcome.EXPIRED:
            raise _nothing_pending(email)
        return ActivationReply(outcome=outcome)

    @_outages_mapped("resend")
    async def resend(
        self, email: str, requested_by: str = "customer", *, request_id: str | None = None
    ) -> ResendReply:
        """Mail a new code (the old one stops working), within the throttle and the cap.

        ``request_id``, as for ``submit_code`` (within the same run): a retry with the same one
        gets the first reply (``sent``) instead of sending another code, or being told
        ``throttled`` about the code its own first try sent."""
        request = _validated(ResendRequest, requested_by=requested_by)
        update_id = _update_id(RegistrationWorkflow.request_resend, request_id)
        try:
            return await self._update(
                "resend", email, RegistrationWorkflow.request_resend, request, update_id
            )
        except RPCError as err:
            if self._not_found(err):
                raise _nothing_pending(email) from None
            raise
        except WorkflowUpdateFailedError:
            status = await self._status_of(email, self._handle_for(email))
            return ResendReply(outcome=ResendOutcome.NOT_PENDING, resends_left=status.resends_left)

    @_outages_mapped("approve")
    async def approve(self, email: str, operator: str, reason: str) -> RegistrationStatus:
        """Staff activation without a code. Raises ``NotPending`` unless it is pending.

        The run is described before it is queried: a query of a run that Temporal terminated
        replays it up to the termination, and says ``pending`` for one terminated while pending.
        The query and the signal go to the run described, so that an approval never reaches a
        later registration of the email; a run that closes in between (the signal fails as
        "already completed") is ``NotPending`` with the state it ended in."""
        approval = _validated(Approval, operator=operator, reason=reason)
        run, _ = await self._open_run(email, "not pending")
        status = await self._status_of(email, run)
        if status.state is not RegistrationState.PENDING:
            raise _not_pending(email, status.state.value, "not pending")
        try:
            await run.signal(RegistrationWorkflow.approve, approval)
        except RPCError as err:
            if not self._closed(err):
                raise
            raise await self._ended_meanwhile(email, run, "not pending") from None
        return status

    @_outages_mapped("status")
    async def status(self, email: str) -> RegistrationStatus:
        """The registration's state, by a query that a worker answers (``NoWorkerAnswered`` if
        none does within the answer timeout)."""
        return await self._status_of(email, self._handle_for(email))

    @_outages_mapped("cancel")
    async def cancel(self, email: str, reason: str = "") -> None:
        """Cancels a running registration; its compensations undo what it did. Raises
        ``NotPending`` once it has ended, and also while its run is still open for an outcome
        that is decided (``_DECIDED``: the welcome mail of an active one, the undos of the
        others), which the workflow keeps: the cancel would change nothing, and reporting it done
        would tell staff that something was undone (an outcome decided between this check and
        the cancel's arrival still keeps it: the workflow ignores the cancel then). The state is
        the one the run records in its search attribute; a registration started without search
        attributes is asked by the status query (``NoWorkerAnswered`` if no worker answers).

        The cancel goes to the run described, not to a registration that continues it as new.
        Temporal accepts a cancel of a run that has closed, and does nothing with it: a run that
        closed in between is told by its description afterwards (``_cancel_reached``), as
        ``NotPending`` with the state it ended in.

        ``reason`` goes into the run's history and the Temporal UI as given: up to 500 characters
        of one line (``workflows.models.Reason``), else ``InvalidInput`` and nothing is sent."""
        try:
            reason = _REASON.validate_python(reason)
        except ValidationError as err:
            raise InvalidInput("reason", err.errors()[0]["msg"]) from None
        run, description = await self._open_run(email, "not running")
        state = await self._running_state(email, run, description)
        if state in _DECIDED:
            message = (
                f"the registration of {email} is already {state}: a cancel would change nothing"
            )
            raise NotPending(state.value, message)
        try:
            await run.cancel(reason=reason)
        except RPCError as err:
            if not self._closed(err):
                raise
            raise await self._ended_meanwhile(email, run, "not running") from None
        try:
            after = await run.describe()
        except RPCError:
            return  # accepted; only the check that it reached a running run failed
        if not _cancel_reached(after):
            raise _not_pending(email, _ended_state(after), "not running")

    # -- internals -------------------------------------------------------------------------------

    async def _open_run(
        self, email: str, not_what: str
    ) -> tuple[WorkflowHandle[Any, Any], WorkflowExecutionDescription]:
        """The registration's current run, pinned by its run id, and its description; a run that
        is no longer running is ``NotPending`` (``"..., {not_what}"``) with the state it ended in
        (``_ended_state``). Asked of Temporal, not by a query, which a run that Temporal ended
        answers as it was before the end."""
        handle = self._handle_for(email)
        description = await self._registered(email, handle.describe())
        if description.status is not WorkflowExecutionStatus.RUNNING:
            raise _not_pending(email, _ended_state(description), not_what)
        run = self._client.get_workflow_handle(description.id, run_id=description.run_id)
        return run, description

    async def _running_state(
        self,
        email: str,
        run: WorkflowHandle[Any, Any],
        description: WorkflowExecutionDescription,
    ) -> RegistrationState:
        """A running registration's state: the one its ``RegistrationStatus`` search attribute
        records (the workflow sets it with each state it reaches), which needs no worker: staff
        may cancel a registration that no worker has picked up yet (it records ``starting``).
        Else the status query (a registration started without search attributes)."""
        recorded = description.typed_search_attributes.get(visibility.STATUS)
        if recorded in _STATES:
            return RegistrationState(recorded)
        return (await self._status_of(email, run)).state

    async def _status_of(self, email: str, handle: WorkflowHandle[Any, Any]) -> RegistrationStatus:
        """The status query of ``handle``'s run; ``NoWorkerAnswered`` if no worker answers. A run
        that ended before any worker started it (terminated from the UI right after its start)
        has no state to answer with: it registered nothing, and is ``UnknownRegistration``."""
        query = handle.query(RegistrationWorkflow.status, rpc_timeout=self._answer_timeout)
        try:
            return await self._registered(email, query)
        except RPCError as err:
            if err.status is RPCStatusCode.FAILED_PRECONDITION and _NEVER_RAN in err.message:
                raise UnknownRegistration(
                    f"no registration for {email}: its run ended before a worker started it"
                ) from None
            # The RPC's own timeout: "Timeout expired", with CANCELLED (or DEADLINE_EXCEEDED);
            # or the server's own verdict once the task queue's worker has gone: "no poller seen
            # for task queue recently, worker may be down" (FAILED_PRECONDITION).
            if err.status in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED) or (
                err.status is RPCStatusCode.FAILED_PRECONDITION and "no poller" in err.message
            ):
                raise self._no_worker() from None
            raise

    async def _ended_meanwhile(
        self, email: str, run: WorkflowHandle[Any, Any], not_what: str
    ) -> NotPending:
        """``NotPending`` for a run that closed after ``_open_run`` found it running."""
        description = await self._registered(email, run.describe())
        return _not_pending(email, _ended_state(description), not_what)

    def _registration_input(
        self, *, password: str, activation_ttl: timedelta | None, **fields: Any
    ) -> RegistrationInput:
        settings = self._settings
        try:
            password_text(password)  # before sealing: a lone surrogate cannot even be encoded
        except ValueError as err:
            raise InvalidInput("password", str(err)) from None
        policy = _registration_policy(settings, activation_ttl)
        registration = _validated(
            RegistrationInput, sealed_password=self._sealer.seal(password), policy=policy, **fields
        )
        try:
            self._passwords.check(password, context=(registration.email, registration.name))
        except PasswordPolicyError as err:
            raise InvalidInput("password", str(err).removeprefix("password: ")) from None
        return registration

    async def _update(
        self,
        call: str,
        email: str,
        update: UpdateMethodMultiParam[[Any, A], R],
        arg: A,
        update_id: str,
    ) -> R:
        """An update, tried again when the workflow task that took it was rejected (e.g. a cancel
        arrived meanwhile): the workflow state was rolled back, so the retry is safe. A worker must
        accept it within the answer timeout (``NoWorkerAnswered``); its result may take longer.
        It runs in one of the email's places (``_call_slot``: ``Busy`` if none is free), and
        ``call`` names it in the advice of an error.

        Every try carries ``update_id``, and so does each of the SDK's own retries of one try.
        The server keeps one update per id and run, whichever update it names (hence the name in
        the id, ``_update_id``): a repeat of an id that is admitted, accepted or completed in the
        same run is attached to that update and answered with its outcome (also once that run has
        closed), and the workflow never sees it. The id is addressed to the workflow ID, not to a
        run: once a new registration for the email has started (a new ``register``, also one
        that continued the run as new), a repeat reaches that one's run, which never saw the id,
        and runs there afresh. Nothing is kept of an update that was rejected, by the validator
        or with the workflow task that took it (the server clears its update registry then;
        Temporal's docs/architecture/workflow-update.md), so a try after FAILED_PRECONDITION runs
        it afresh under the same id."""
        registration = self._handle_for(email)
        with self._call_slot(email, registration.id, call):
            for attempt in range(UPDATE_ATTEMPTS):
                try:
                    handle = await self._accepted(
                        registration.start_update(
                            update, arg, wait_for_stage=WorkflowUpdateStage.ACCEPTED, id=update_id
                        )
                    )
                    return await handle.result()
                except RPCError as err:
                    if err.status is not RPCStatusCode.FAILED_PRECONDITION:
                        raise
                    if attempt == UPDATE_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    @contextmanager
    def _call_slot(self, email: str, registration_id: str, call: str) -> Iterator[None]:
        """One of the ``calls_per_email`` places of ``email``'s registration for the ``call``
        (``submit_code`` or ``resend``), or ``Busy`` at once: a flood of guesses from one
        process never reaches Temporal, whose limit of updates in flight per workflow it would
        otherwise fill for the customer too. A concurrency cap, not a rate limit: a call frees
        its place when it returns, and the entry of an email goes with its last call."""
        limit, under_way = self._calls_per_email, self._calls_under_way
        taken = under_way.get(registration_id, 0)
        if limit is not None and taken >= limit:
            raise Busy(
                f"{taken} submit_code or resend calls for {email} are under way in this client"
                f" (at most {limit} at once)",
                _RETRY_ADVICE[call],
            )
        under_way[registration_id] = taken + 1
        try:
            yield
        finally:
            left = under_way[registration_id] - 1
            if left:
                under_way[registration_id] = left
            else:
                del under_way[registration_id]

    async def _accepted(self, call: Awaitable[R]) -> R:
        """``call``, an update's start, within the answer timeout. The SDK turns the cancellation
        into its ``WorkflowUpdateRPCTimeoutOrCancelledError``, which the server's own deadlines
        raise too: only the expired deadline means that no worker answered."""
        deadline = asyncio.timeout(self._answer_timeout.total_seconds())
        try:
            async with deadline:
                return await call
        except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
            if not deadline.expired():
                raise
            raise self._no_worker() from None

    def _no_worker(self) -> NoWorkerAnswered:
        return NoWorkerAnswered(
            f"no worker answered within {self._answer_timeout.total_seconds():g} s: is worker.py"
            f" running on task queue {self._settings.task_queue!r}"
            f" ({env_variable('task_queue')}) of namespace {self._client.namespace!r}?"
        )

    def _check_namespace(self, err: RPCError) -> None:
        """Raises ``NamespaceNotFound`` (a configuration error naming ``TEMPORAL_NAMESPACE``) if
        ``err`` says that the client's namespace does not exist."""
        if namespace_not_found(err):
            raise NamespaceNotFound(self._client) from None

    def _closed(self, err: RPCError) -> bool:
        """Whether a signal or cancel of a pinned run failed because the run has closed (NOT_FOUND,
        "workflow execution already completed"), or is gone."""
        return self._not_found(err) or "already completed" in err.message

    def _not_found(self, err: RPCError) -> bool:
        """Whether ``err`` says that the registration's workflow does not exist. Temporal says
        NOT_FOUND for a namespace that does not exist too: that raises ``NamespaceNotFound``
        instead of passing for a missing registration."""
        self._check_namespace(err)
        return err.status is RPCStatusCode.NOT_FOUND

    async def _registered(self, email: str, call: Awaitable[R]) -> R:
        """Awaits a call on the registration of ``email``; NOT_FOUND means there is none."""
        try:
            return await call
        except RPCError as err:
            if self._not_found(err):
                raise UnknownRegistration(f"no registration for {email}") from None
            raise

    async def _check_search_attributes(self) -> None:
        """Once per client, before its first start: registrations that use search attributes
        stall on a namespace that lacks one (``visibility.NamespaceTrouble``), and the start
        itself fails only for the attributes it sets. A key that may not list them leaves that
        to the start's own error."""
        if not self._settings.search_attributes or self._search_attributes_checked:
            return
        try:
            try:
                trouble = await visibility.namespace_trouble(self._client)
            except RPCError as err:
                if not _channel_reset(err):
                    raise
                # A read on a connection the server closed while it sat idle: once more.
                trouble = await visibility.namespace_trouble(self._client)
        except RPCError as err:
            self._check_namespace(err)
            raise
        if trouble:
            variable = env_variable("search_attributes")
            raise InvalidSettings(
                f"{variable}: {trouble}, or set {variable}=false to start registrations without"
                " them"
            )
        self._search_attributes_checked = True

    def _missing_search_attributes(self, err: RPCError) -> InvalidSettings:
        """The namespace lacks the search attributes a registration starts with (a real cluster
        where nobody created them): the server's message, and the commands that fix it. This is
        the fallback for a key that may not list the namespace's attributes, which is the case
        of some Temporal Cloud roles, where the operator API cannot create them either: so the
        ``tcld`` form comes too, as ``visibility.NamespaceTrouble`` gives it."""
        namespace = self._client.namespace
        commands = visibility.create_commands(namespace)
        commands.append(f"on Temporal Cloud: {visibility.cloud_command(namespace)}")
        variable = env_variable("search_attributes")
        return InvalidSettings(
            f"{variable}: {err.message}. Create the search attributes ({'; '.join(commands)}),"
            f" or set {variable}=false to start registrations without them"
        )

    def _search_attributes(self, registration: RegistrationInput) -> TypedSearchAttributes | None:
        if not self._settings.search_attributes:
            return None
        hashed = self._settings.workflow_id_mode is WorkflowIdMode.HASHED
        return visibility.at_start("starting", None if hashed else registration.canonical_email)

    def _summary(self, registration: RegistrationInput) -> str:
        """The UI's one-line summary (an encrypted payload like any other; the UI renders it as
        Markdown: the values are escaped, and the email is in parentheses, not angle brackets)."""
        name = _markdown_literal(registration.name)
        if self._settings.workflow_id_mode is WorkflowIdMode.HASHED:
            return f"Registration of {name}"
        return f"Registration of {name} ({_markdown_literal(registration.email)})"

    def _handle_for(self, email: str) -> WorkflowHandle[Any, Any]:
        """The registration of ``email``; an address no registration could have is
        ``InvalidInput``, not an unknown registration."""
        try:
            _EMAIL.validate_python(email)
        except ValidationError as err:
            raise InvalidInput("email", err.errors()[0]["msg"]) from None
        return self._handle(self.registration_id(email))

    def _handle(self, workflow_id: str) -> WorkflowHandle[Any, Any]:
        return self._client.get_workflow_handle(workflow_id)

    async def _closed_outcome(self, email: str) -> ActivationOutcome:
        """Why a code could not be taken: the registration expired, or nothing is pending (also
        once it is active and its workflow closed: no code can be checked any more, and
        "activated" for any code would tell who has an account). An email with an account
        answers as a new one's registration would have ended: expired at the end of its window,
        or locked (nothing pending) after too many wrong codes."""
        status = await self._status_of(email, self._handle_for(email))
        expired = status.state is RegistrationState.EXPIRED or (
            status.state is RegistrationState.ALREADY_REGISTERED and status.attempts_left > 0
        )
        return ActivationOutcome.EXPIRED if expired else ActivationOutcome.NOT_PENDING


M = TypeVar("M", bound=BaseModel)
A = TypeVar("A")
R = TypeVar("R")


def _nothing_pending(email: str) -> UnknownRegistration:
    """What ``submit_code`` and ``resend`` say when no run for ``email`` is open: the same for an
    email never registered and for one whose registration ended (``submit_code`` still tells an
    expiry). Told apart, anyone could learn without registering (which would mail the owner) that
    an email signed up and activated, within the namespace's retention."""
    return UnknownRegistration(f"no pending registration for {email}")


def _update_id(update: UpdateMethodMultiParam[Any, Any], request_id: str | None) -> str:
    """The update id of one ``submit_code`` or ``resend`` call: the caller's ``request_id`` (or a
    new one for a call without) behind the update's name, ``submit_activation_code:<id>``, so
    that the retries of a call are one update. Temporal keeps one update per id and run,
    whichever update it names: without the name, a resend given the id of a code would be
    answered with the code's reply (which does not even decode as a resend's). Made here, not by
    the SDK per ``start_update``, so that ``_update``'s own tries of the call share it."""
    name = update._defn.name  # the update's name in Temporal, as the SDK's client takes it
    if request_id is None:
        return f"{name}:{uuid.uuid4()}"
    try:
        return f"{name}:{_REQUEST_ID.validate_python(request_id)}"
    except ValidationError as err:
        raise InvalidInput("request_id", err.errors()[0]["msg"]) from None


def _not_pending(email: str, state: str, not_what: str) -> NotPending:
    """``NotPending`` for ``state``: "the registration of <email> is <state>, <not_what>"."""
    return NotPending(state, f"the registration of {email} is {state}, {not_what}")


def _cancel_reached(description: WorkflowExecutionDescription) -> bool:
    """Whether a cancel that Temporal accepted reached the run described after it: Temporal
    records it on a running run (``cancel_requested``, kept once the run has ended), and accepts
    one for a run that has closed without recording anything. A server that does not report
    ``cancel_requested`` is taken at its word while the run is running or ended cancelled."""
    requested = description.raw_description.workflow_extended_info.cancel_requested
    return requested or description.status in (
        WorkflowExecutionStatus.RUNNING,
        WorkflowExecutionStatus.CANCELED,
    )


_NEVER_RAN = "closed before WorkflowTaskStarted"
"""The server's words (FAILED_PRECONDITION, ``WorkflowNotReadyFailure``) for a query of a run
that closed before a worker started its first task: there is nothing to replay."""

_STATES = frozenset(state.value for state in RegistrationState)
_DECIDED = frozenset(
    {
        RegistrationState.ACTIVE,
        RegistrationState.EXPIRED,
        RegistrationState.FAILED,
        RegistrationState.CANCELLED,
    }
)
"""Outcomes a cancel no longer changes while the run stays open for them (the welcome mail of an
active registration, the undos of the others): the workflow keeps an outcome once decided.
``already_registered`` is not among them: staff may cancel it, which ends its run Canceled in
Temporal (its status stays ``already_registered``); nor is ``locked``, whose run holds the
email's failure window: a cancel releases it (``RegistrationWorkflow._hold_lockout``)."""


_ENDED_ON_ITS_OWN = frozenset(
    {
        WorkflowExecutionStatus.COMPLETED,
        WorkflowExecutionStatus.CANCELED,
        WorkflowExecutionStatus.FAILED,
        # Into a registration requested meanwhile (``register_again``): this run's outcome is
        # the one it recorded before that.
        WorkflowExecutionStatus.CONTINUED_AS_NEW,
    }
)


def _ended_state(description: WorkflowExecutionDescription) -> str:
    """The state a registration's run that is no longer running ended in: the one it recorded in
    its ``RegistrationStatus`` search attribute, when it ended on its own (completed, cancelled,
    failed, or continued as new into a registration requested meanwhile), else Temporal's status
    of the run: a terminated run never recorded its end, and one without search attributes
    recorded nothing."""
    status = description.status
    recorded = description.typed_search_attributes.get(visibility.STATUS)
    if status in _ENDED_ON_ITS_OWN and recorded in _STATES:
        return str(recorded)
    return status.name.lower() if status is not None else "unknown"


def _seal_mismatch(err: WorkflowUpdateFailedError) -> bool:
    """Whether the update failed because the worker could not open the sealed code: the
    ``SEAL_MISMATCH`` error of ``verify_activation``, inside the local activity's failure."""
    cause: BaseException | None = err.cause
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type == SEAL_MISMATCH:
            return True
        cause = cause.__cause__
    return False


def _no_attempts_left(err: WorkflowUpdateFailedError) -> bool:
    """Whether the update validator refused the code for want of attempts (``NO_ATTEMPTS_LEFT``):
    the current code's are spent, or the registration is locked out."""
    cause = err.cause
    return isinstance(cause, ApplicationError) and cause.type == NO_ATTEMPTS_LEFT


def _names_search_attribute(err: RPCError) -> bool:
    """Whether the server refused a start over one of the registration's search attributes
    (INVALID_ARGUMENT, "Namespace default has no mapping defined for search attribute ...": the
    error has no details that would say so)."""
    return err.status is RPCStatusCode.INVALID_ARGUMENT and any(
        key.name in err.message for key in visibility.ALL
    )


def _registration_policy(
    settings: Settings, activation_ttl: timedelta | None = None
) -> RegistrationPolicy:
    """The limits a registration copies at start: the configured ones, with ``activation_ttl``
    instead of the configured TTL if given (out of bounds, ``InvalidInput`` naming it). The
    settings hold the configured ones to the same bounds at start-up (``common/policy.py``)."""
    fields = settings.model_dump(include=set(RegistrationPolicy.model_fields))
    if activation_ttl is not None:
        fields["activation_ttl"] = activation_ttl
    return _validated(RegistrationPolicy, **fields)


def _validated(make: Callable[..., M], **fields: Any) -> M:
    """Build a model; the first validation error becomes ``InvalidInput`` naming the field."""
    try:
        return make(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or make.__name__
        raise InvalidInput(field, first["msg"]) from None
