"""RegistrationWorkflow: one customer's sign-up, from first request to active account.

The story, top to bottom (``run``):
1. look the email up; an existing active account gets a "you already have an account" mail, and
   the caller gets the answers of a new registration, the first and every later one, until the
   activation window ends (no account enumeration);
2. create the login principal, inactive, with the sealed password;
3. mail an activation code (the workflow keeps only its keyed HMAC);
4. wait up to the TTL for the code (update/signal), a staff approval, resends, or a lockout;
5. link the customer record found by email, or create one, then activate the principal with the
   link; send a welcome mail (best effort).
Every step that changed something registers its undo; expiry, lockout, cancellation and failures
run the undos (``workflows/saga.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.activation import ActivationActivities
    from activities.codes import CodeActivities
    from activities.customers import CustomerActivities
    from activities.identity import IdentityActivities
    from activities.mail import MailActivities
    from activities.models import (
        NO_CODE,
        ActivatePrincipalInput,
        CreatePrincipalInput,
        CustomerRef,
        EmailLookup,
        IssueActivationInput,
        IssuedActivation,
        LinkAndActivateInput,
        NoticeInput,
        PrincipalRef,
        ProviderProfile,
        VerifyActivationInput,
    )
    from activities.profile import ProfileActivities
    from activities.roles import Customer, CustomerLink, NewCustomer, NewPrincipal, Principal
    from workflows.models import (
        ActivationOutcome,
        ActivationReply,
        Approval,
        CodeSubmission,
        RegistrationInput,
        RegistrationResult,
        RegistrationState,
        RegistrationStatus,
        ResendOutcome,
        ResendReply,
        ResendRequest,
    )
    from workflows.saga import Saga, Undo, run_to_completion
    from workflows.visibility import Visibility

A = TypeVar("A")
R = TypeVar("R")

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))
"""Forward steps: transient errors retry with backoff; typed provider errors are non-retryable."""
LOCAL_STEP_TIMEOUT = timedelta(seconds=10)
LOCAL_STEP_DEADLINE = timedelta(minutes=5)
REMOTE_STEP_TIMEOUT = timedelta(seconds=30)
REMOTE_STEP_DEADLINE = timedelta(minutes=30)
"""How long a forward step may keep retrying before the registration fails and compensates."""
WELCOME_DEADLINE = timedelta(minutes=10)
CANCEL_AFTER_THE_END = "cancel-after-the-end-ignored"
KEEP_FIRST_ENDING = "keep-first-ending"
CHECK_REPEATED_CODES = "check-repeated-codes"
FIRST_NOTICE_FIRST = "first-notice-first"
CANCEL_BEFORE_THE_START = "cancel-before-the-start"
NO_CODE_AFTER_APPROVAL = "no-code-after-approval"
NO_CODE_AT_THE_END = "no-code-at-the-end"
"""``workflow.patched`` ids of behaviour added after registrations were recorded without it; each
is asked only on the rare path it changes, so an ordinary registration records no marker."""
ENDINGS = frozenset(RegistrationState) - {
    RegistrationState.STARTING,
    RegistrationState.PENDING,
    RegistrationState.ACTIVATING,
}
FIRST_MAIL_GRACE = timedelta(seconds=10)
"""The first resend throttle counts from the start, unless the first mail went out later than
this, or than half the resend interval (a mail provider retrying): then from that mail, so two
codes never go out back to back."""


@workflow.defn
class RegistrationWorkflow:
    @workflow.init
    def __init__(self, input: RegistrationInput) -> None:
        self._input = input
        self._policy = input.policy
        self._state = RegistrationState.STARTING
        self._started_at = workflow.now()
        self._expires_at = self._started_at + input.policy.activation_ttl
        self._activated_at: datetime | None = None
        self._reason: str | None = None
        self._profile: ProviderProfile | None = None
        self._visibility = Visibility()
        self._new_principal_id = str(workflow.uuid4())
        self._new_customer_id = str(workflow.uuid4())
        self._principal: Principal | None = None
        self._customer: Customer | None = None
        self._linked_existing = False
        self._existing_account = False
        """The email has an active account: calls are answered as if a code were pending."""
        # Activation bookkeeping; handlers take the lock so checks and resends never interleave.
        # A resend holds it through its mail: a code typed from the new mail before the workflow
        # has that code's digest would be checked against the old one and cost an attempt. The
        # price: while a slow mail provider retries, a check of the old code waits for it.
        self._code_lock = asyncio.Lock()
        self._issued: IssuedActivation | None = None
        self._issued_at: datetime | None = None
        self._resends = 0
        self._attempts_on_code = 0
        self._attempts_total = 0
        self._code_verified = False
        self._repeats = 0
        """Codes submitted once the activation was under way (``_check_repeated_code``)."""
        self._approval: Approval | None = None
        self._locked_out = False
        self._saga = Saga(on_cancel=self._cancel_seen)
        self._registered_again: RegistrationInput | None = None
        """The newest ``register`` for this email that no code of this run answers; it starts
        when this run ends (``register_again``)."""
        self._cancels = 0
        """Cancels seen so far (``_cancel_seen``): a ``register`` from before one is dropped."""

    @workflow.run
    async def run(self, input: RegistrationInput) -> RegistrationResult:
        self._visibility.started()
        try:
            result = await self._register()
        except (asyncio.CancelledError, FailureError) as err:
            if is_cancelled_exception(err):
                self._cancel_seen()
                if self._profile is None and not workflow.patched(CANCEL_BEFORE_THE_START):
                    raise  # recorded before: the run ended cancelled, its status "starting"
                await self._end_with_compensation(RegistrationState.CANCELLED, "cancelled")
                await self._finish_handlers()
                self._continue_if_registered_again()
                raise
            reason = _describe(err)
            await self._end_with_compensation(RegistrationState.FAILED, reason)
            await self._finish_handlers()
            self._continue_if_registered_again()
            raise ApplicationError(
                f"registration failed: {reason}", type="RegistrationFailed", non_retryable=True
            ) from err
        await self._finish_handlers()
        self._continue_if_registered_again()
        return result

    async def _finish_handlers(self) -> None:
        """Handlers still answering callers (a resend mid-mail) finish before the run ends. The
        outcome is decided by then: a cancel arriving now changes nothing, as during the welcome
        mail (recorded before CANCEL_AFTER_THE_END, it ended the run as cancelled)."""
        try:
            await workflow.wait_condition(workflow.all_handlers_finished)
        except asyncio.CancelledError:
            if not workflow.patched(CANCEL_AFTER_THE_END):
                raise
            workflow.logger.info("cancel ignored: the registration is %s", self._state.value)
            self._cancel_seen()
            await run_to_completion(workflow.wait_condition(workflow.all_handlers_finished))

    def _continue_if_registered_again(self) -> None:
        """This run is done (undos included): a ``register`` that no code of it answered starts
        now, as the next run of this workflow ID (continue-as-new; its status query and search
        attributes take over from this run's, whose outcome stays in its history). After an
        activation, that next run finds the account and tells its owner, as any later
        ``register`` would."""
        if self._registered_again is not None:
            workflow.logger.info("the registration requested meanwhile starts")
            workflow.continue_as_new(
                self._registered_again, search_attributes=self._visibility.next_run()
            )

    def _cancel_seen(self) -> None:
        """A cancel drops a ``register`` that came in before it: staff stopped this email's
        registration. One that comes in after the cancel still starts."""
        self._cancels += 1
        if self._registered_again is not None:
            workflow.logger.info("cancelled: the registration requested before is dropped")
            self._registered_again = None

    async def _register(self) -> RegistrationResult:
        # Which providers run in-process (local activities) and which call out. Inside the
        # ``try`` of ``run``: a cancel that reaches a registration before its first step still
        # ends it as cancelled, not stuck at "starting".
        self._profile = await workflow.execute_local_activity_method(
            ProfileActivities.describe_providers,
            start_to_close_timeout=LOCAL_STEP_TIMEOUT,
            schedule_to_close_timeout=LOCAL_STEP_DEADLINE,
            retry_policy=local_retry(LOCAL_STEP_DEADLINE),
            summary="which providers run in-process",
        )

        # 1. Is this email already someone's account?
        existing = await self._identity(
            IdentityActivities.find_principal,
            EmailLookup(email_canonical=self._input.canonical_email),
            "look up the email",
        )
        if existing is not None and (existing.active or not existing.replaceable):
            await self._answer_as_if_pending()  # an inactive one owned by someone else too
            return self._result()
        if existing is not None:
            # An inactive leftover of an earlier registration that was never cleaned up (e.g. a
            # terminated workflow): it cannot log in, so it is replaced by this registration.
            await self._identity(
                IdentityActivities.delete_principal,
                PrincipalRef(principal_id=existing.id),
                "delete stale inactive principal",
            )

        # 2. The login principal, inactive until the email is proven. Its id, and the id of the
        # customer this registration may create, are chosen here: their undos go in up front.
        self._saga.add(lambda: self._delete_customer(self._new_customer_id))
        self._saga.add(lambda: self._delete_principal(self._new_principal_id))
        self._principal = await self._saga.step(
            self._identity(
                IdentityActivities.create_principal,
                self._new_principal(),
                "create inactive principal",
            )
        )

        # 3. The activation code, by mail.
        await self._issue_code()
        self._state = RegistrationState.PENDING
        self._registered_again = None  # the code just mailed answers a register made meanwhile
        self._visibility.pending(self._expires_at)

        # 4. Wait for the code, an approval, expiry or a lockout.
        if not await self._activation_arrived():
            ending = RegistrationState.LOCKED if self._locked_out else RegistrationState.EXPIRED
            await self._end_with_compensation(ending, None)
            return self._result()

        # 5. Customer record (linked or created), then the principal goes active with the link.
        self._state = RegistrationState.ACTIVATING
        self._show_activating()
        await self._link_customer_and_activate()
        self._saga.commit()
        self._activated_at = workflow.now()
        self._visibility.activation_latency(self._activated_at - self._started_at)
        self._end(RegistrationState.ACTIVE)
        await self._send_welcome()
        return self._result()

    async def _answer_as_if_pending(self) -> None:
        """Step 1's other ending. The owner of the account is told (instead of getting a code);
        the caller cannot tell: wrong codes, resends and their limits, and finally expiry, are
        answered exactly as for a new email until the activation window ends. The status query
        (staff) and the search attributes say ``already_registered`` from the start."""
        if not self._in_process.existing_account_answers_as_pending:  # recorded before it existed
            await self._mail(
                MailActivities.send_already_registered, self._notice(), "mail: already registered"
            )
            self._end(RegistrationState.ALREADY_REGISTERED)
            return
        self._existing_account = True
        if self._in_process.existing_account_in_equal_time:
            await self._identity(
                IdentityActivities.decoy_create,
                self._new_principal(),
                "as long as creating a principal (no account enumeration)",
            )
        await self._issue_code()
        self._registered_again = None  # as for a new email: this notice answers it
        self._end(RegistrationState.ALREADY_REGISTERED)
        await self._activation_arrived()  # no code exists: only expiry or a lockout ends it
        self._existing_account = False

    # -- Step 3 and 4: codes and waiting --------------------------------------------------------

    async def _issue_code(self) -> None:
        sequence = (self._issued.sequence + 1) if self._issued else 1
        if self._existing_account:  # nothing to activate: the owner is told (again) instead
            await self._mail(
                MailActivities.send_already_registered,
                self._notice(sequence),
                f"mail: already registered #{sequence}",
            )
            self._issued = IssuedActivation(sequence=sequence, code_digest=NO_CODE)
        else:
            self._issued = await self._mail(
                MailActivities.issue_activation,
                IssueActivationInput(
                    registration_id=workflow.info().workflow_id,
                    sequence=sequence,
                    email=self._input.email,
                    name=self._input.name,
                    locale=self._input.locale,
                    expires_at=self._expires_at,
                ),
                f"mail activation code #{sequence}",
            )
        # The resend throttle counts from here: for the first code, from the start, the same
        # moment whether or not the email has an account (``FIRST_MAIL_GRACE``).
        now = workflow.now()
        grace = min(FIRST_MAIL_GRACE, self._policy.resend_interval / 2)
        from_start = (
            sequence == 1
            and self._in_process.existing_account_in_equal_time
            and now - self._started_at <= grace
        )
        self._issued_at = self._started_at if from_start else now
        self._attempts_on_code = 0

    async def _activation_arrived(self) -> bool:
        """True once a valid code or an approval came in; False on expiry or lockout."""
        try:
            await workflow.wait_condition(
                lambda: self._code_verified or self._approval is not None or self._locked_out,
                timeout=self._expires_at - workflow.now(),
                timeout_summary="activation window",
            )
        except TimeoutError:
            return False
        return not self._locked_out

    @workflow.update
    async def submit_activation_code(self, submission: CodeSubmission) -> ActivationReply:
        """Check a code (or link token) and, if right, answer once the account is active."""
        reply = await self._check_code(submission)
        if reply.outcome is not ActivationOutcome.ACTIVATED:
            return reply
        await workflow.wait_condition(
            lambda: self._state not in (RegistrationState.PENDING, RegistrationState.ACTIVATING)
        )
        return ActivationReply(outcome=self._outcome_for_caller())

    @submit_activation_code.validator
    def _code_only_while_pending(self, submission: CodeSubmission) -> None:
        if not self._activation_underway:
            self._require_pending()

    def _require_pending(self) -> None:
        """Rejected updates never reach history: cheap for the server and for the caller."""
        if not self._pending_for_caller:
            raise ValueError(f"no activation is pending (registration is {self._state.value})")

    @workflow.signal
    async def activate(self, submission: CodeSubmission) -> None:
        """Fire-and-forget form of ``submit_activation_code`` (e.g. from the Temporal UI)."""
        try:
            await self._check_code(submission)
        except FailureError as err:  # a signal must not fail the workflow; status tells
            workflow.logger.warning("code check failed: %s", _describe(err))

    async def _check_code(self, submission: CodeSubmission) -> ActivationReply:
        async with self._code_lock:
            if self._activation_underway and workflow.patched(CHECK_REPEATED_CODES):
                return await self._check_repeated_code(submission)
            # ``_code_verified`` here only for histories recorded before CHECK_REPEATED_CODES.
            if not self._pending_for_caller or self._code_verified:
                return ActivationReply(outcome=self._outcome_for_caller())
            if self._attempts_on_code >= self._policy.max_attempts_per_code:
                return ActivationReply(outcome=ActivationOutcome.TOO_MANY_ATTEMPTS, attempts_left=0)
            valid = await self._verify(submission)
            if not self._pending_for_caller:  # expired while checking
                return ActivationReply(outcome=self._outcome_for_caller())
            if valid:
                self._code_verified = True
                return ActivationReply(outcome=ActivationOutcome.ACTIVATED)
            self._attempts_on_code += 1
            self._attempts_total += 1
            if self._attempts_total >= self._policy.max_attempts_total:
                self._locked_out = True
            left = self._attempts_left()
            outcome = (
                ActivationOutcome.INVALID_CODE if left else ActivationOutcome.TOO_MANY_ATTEMPTS
            )
            return ActivationReply(outcome=outcome, attempts_left=left)

    async def _check_repeated_code(self, submission: CodeSubmission) -> ActivationReply:
        """A code submitted once the activation is under way (a double click, a call retried
        after a timeout): the right one is told how the activation ends, as the first one was,
        and costs no attempt; any other learns nothing but that nothing is pending. Only the
        first few are checked (``max_attempts_per_code``): each check is a local activity."""
        self._repeats += 1
        if self._repeats <= self._policy.max_attempts_per_code and await self._verify(submission):
            return ActivationReply(outcome=ActivationOutcome.ACTIVATED)
        return ActivationReply(outcome=ActivationOutcome.NOT_PENDING)

    async def _verify(self, submission: CodeSubmission) -> bool:
        """The constant-time check against the HMAC of the current code (a local activity)."""
        assert self._issued is not None
        return await workflow.execute_local_activity_method(
            CodeActivities.verify_activation,
            VerifyActivationInput(
                registration_id=workflow.info().workflow_id,
                issued=self._issued,
                submission=submission,
            ),
            start_to_close_timeout=LOCAL_STEP_TIMEOUT,
            schedule_to_close_timeout=LOCAL_STEP_DEADLINE,
            retry_policy=local_retry(LOCAL_STEP_DEADLINE),
            summary="verify activation code",
        )

    @workflow.signal
    def approve(self, approval: Approval) -> None:
        """Staff activation without a code; ignored unless the registration is pending."""
        if self._state is RegistrationState.PENDING and self._approval is None:
            workflow.logger.info("approved by %s: %s", approval.operator, approval.reason)
            self._approval = approval

    @workflow.update
    async def request_resend(self, request: ResendRequest | None = None) -> ResendReply:
        """A new code by mail; the old one stops working. Throttled and capped by the policy.
        Takes no input (or ``null``) like the signal: staff calling it from the UI or CLI."""
        return await self._resend(request or ResendRequest())

    @request_resend.validator
    def _resend_only_while_pending(self, request: ResendRequest | None = None) -> None:
        self._require_pending()

    @workflow.signal
    async def resend(self, request: ResendRequest | None = None) -> None:
        """Fire-and-forget form of ``request_resend`` (Temporal UI)."""
        await self._resend_quietly(request or ResendRequest())

    @workflow.signal
    async def register_again(self, again: RegistrationInput) -> None:
        """``register`` for this email while this run is open (the starter's answer to "already
        started"). While codes are taken (or an email with an account is answered as if they
        were) it is a resend, and this registration's data stays. Otherwise a resend would be
        lost: before the first mail, while the account is being activated or welcomed, after the
        window, while undos run (a refused one is retried for hours). Then the request is kept,
        the newest one: the first mail answers it if one is still to come, else it starts when
        this run ends (``_continue_if_registered_again``)."""
        if again.canonical_email != self._input.canonical_email:  # sent by hand, from the UI
            workflow.logger.warning("register_again for another email ignored")
            return
        cancels = self._cancels
        if self._takes_resends:
            reply = await self._resend_quietly(ResendRequest(requested_by="repeated registration"))
            if reply is None or reply.outcome is not ResendOutcome.NOT_PENDING:
                return
            # The run moved on while this waited for the code lock (a lockout, the expiry, an
            # accepted code or approval): nothing was mailed, so the request is kept after all.
        if self._cancels != cancels:
            workflow.logger.info("cancelled: the registration requested before is dropped")
            return
        workflow.logger.info("registered again: answered by the first mail or the next run")
        self._registered_again = again

    async def _resend_quietly(self, request: ResendRequest) -> ResendReply | None:
        """``_resend`` for a signal, which must not fail the workflow: None if it failed (the
        log and the status tell)."""
        try:
            return await self._resend(request)
        except FailureError as err:
            workflow.logger.warning("resend failed: %s", _describe(err))
            return None

    async def _resend(self, request: ResendRequest) -> ResendReply:
        async with self._code_lock:
            # Recorded before FIRST_NOTICE_FIRST, an email with an account took resends while its
            # first notice was still being sent (each sent a notice of its own).
            early = self._existing_account and self._issued is None
            if early and not workflow.patched(FIRST_NOTICE_FIRST):
                pass
            elif not self._pending_for_caller or self._code_verified:
                return self._resend_reply(ResendOutcome.NOT_PENDING)
            elif self._approval is not None and workflow.patched(NO_CODE_AFTER_APPROVAL):
                # Approved in the same workflow task, before the run saw it: no new code.
                return self._resend_reply(ResendOutcome.NOT_PENDING)
            elif self._ended_unseen and workflow.patched(NO_CODE_AT_THE_END):
                # Expired or locked in this workflow task (signals come before timers), before
                # the run saw it: no code for a registration about to be undone.
                return self._resend_reply(ResendOutcome.NOT_PENDING)
            if self._resends >= self._policy.max_resends:
                return self._resend_reply(ResendOutcome.LIMIT_REACHED)
            next_at = self._next_resend_at()
            if next_at is not None and workflow.now() < next_at:
                return self._resend_reply(ResendOutcome.THROTTLED)
            workflow.logger.info(
                "resending the activation code (requested by %s)", request.requested_by
            )
            await self._issue_code()
            self._resends += 1
            return self._resend_reply(ResendOutcome.SENT)

    # -- Step 5: customer and activation ----------------------------------------------------------

    def _show_activating(self) -> None:
        """The ``activating`` status, for search, while remote steps run. In-process steps reach
        the server in the same workflow task as the final status, so nobody could see it."""
        profile = self._in_process
        if not (profile.customer_in_one_step and profile.activation_in_process):
            self._visibility.state(self._state)

    async def _link_customer_and_activate(self) -> None:
        """With identity and customers both in-process, one local activity makes both calls
        (``activities/activation.py``: one workflow activation fewer before the caller's answer);
        otherwise one activity per call."""
        assert self._principal is not None
        if self._in_process.activation_in_one_step:
            done = await self._saga.step(
                _step(
                    ActivationActivities.link_customer_and_activate,
                    LinkAndActivateInput(
                        principal_id=self._principal.id, customer=self._new_customer()
                    ),
                    "link or create customer, activate principal with the link",
                    in_process=True,
                ),
                undo=lambda done: self._undo_created_customer(done.link),
            )
            self._customer, self._principal = done.link.customer, done.principal
            self._linked_existing = not done.link.created
            return
        customer = await self._link_or_create_customer()
        self._principal = await self._saga.step(
            self._identity(
                IdentityActivities.activate_principal,
                ActivatePrincipalInput(
                    principal_id=self._principal.id,
                    customer_id=customer.id,
                    customer_number=customer.number,
                ),
                "activate principal with customer link",
            )
        )
        # Only now, as in one step: a failed activation's customer is undone, so neither the
        # status nor the search attributes may name it.
        self._customer = customer

    async def _link_or_create_customer(self) -> Customer:
        if not self._in_process.customer_in_one_step:
            return await self._find_then_create_customer()
        link = await self._saga.step(
            self._customers(
                CustomerActivities.link_or_create_customer,
                self._new_customer(),
                "link or create customer",
            ),
            undo=self._undo_created_customer,
        )
        self._linked_existing = not link.created  # imported before; never deleted by compensation
        return link.customer

    def _undo_created_customer(self, link: CustomerLink) -> Undo | None:
        """Beyond the up-front undo of ``_new_customer_id``: a customer a provider created under
        an id of its own is deleted by that id."""
        customer = link.customer
        if not link.created or customer.id == self._new_customer_id:
            return None
        return lambda: self._delete_customer(customer.id)

    async def _find_then_create_customer(self) -> Customer:
        """Step 5 as registrations started before ``customer_in_one_step`` recorded it."""
        existing = await self._customers(
            CustomerActivities.find_customer,
            EmailLookup(email_canonical=self._input.canonical_email),
            "find customer by email",
        )
        if existing is not None:
            self._linked_existing = True
            return existing
        created = await self._saga.step(
            self._customers(
                CustomerActivities.create_customer, self._new_customer(), "create customer"
            ),
            undo=lambda customer: self._undo_created_customer(
                CustomerLink(customer=customer, created=True)
            ),
        )
        return created

    async def _send_welcome(self) -> None:
        """Best effort: the account is active whether or not this mail goes out."""
        try:
            await self._mail(
                MailActivities.send_welcome,
                self._notice(),
                "mail: welcome",
                deadline=WELCOME_DEADLINE,
            )
        except (asyncio.CancelledError, FailureError) as err:
            # A cancel reaches a remote step as its failure (an activity error caused by the
            # cancellation), a local one as asyncio's own.
            if not is_cancelled_exception(err):
                workflow.logger.warning("welcome mail not sent: %s", _describe(err))
                return
            workflow.logger.info("cancel after activation ignored: the account stays active")
            self._cancel_seen()

    # -- Endings -----------------------------------------------------------------------------------

    def _end(self, state: RegistrationState, reason: str | None = None) -> None:
        """The registration's outcome is decided, once: state, reason, search attributes. A later
        ending (a cancel while an email with an account waits out its window) keeps the first."""
        if self._state in ENDINGS and workflow.patched(KEEP_FIRST_ENDING):
            workflow.logger.info("already %s; %s ignored", self._state.value, state.value)
            return
        self._state = state
        self._reason = reason
        self._visibility.finished(state, self._customer.number if self._customer else None)

    async def _end_with_compensation(self, state: RegistrationState, reason: str | None) -> None:
        self._end(state, reason)
        await self._saga.compensate()

    def _result(self) -> RegistrationResult:
        return RegistrationResult(
            state=self._state,
            principal_id=self._principal.id if self._principal else None,
            customer_id=self._customer.id if self._customer else None,
            customer_number=self._customer.number if self._customer else None,
            linked_existing_customer=self._linked_existing,
            reason=self._reason,
        )

    # -- Query -------------------------------------------------------------------------------------

    @workflow.query
    def status(self) -> RegistrationStatus:
        pending = self._state is RegistrationState.PENDING
        return RegistrationStatus(
            state=self._state,
            started_at=self._started_at,
            expires_at=self._expires_at,
            activated_at=self._activated_at,
            attempts_left=self._policy.max_attempts_total - self._attempts_total,
            code_attempts_left=self._attempts_left(),
            resends_left=self._policy.max_resends - self._resends,
            next_resend_at=self._next_resend_at() if pending else None,
            principal_id=self._principal.id if self._principal else None,
            customer_id=self._customer.id if self._customer else None,
            customer_number=self._customer.number if self._customer else None,
            linked_existing_customer=self._linked_existing,
            approved_by=self._approval.operator if self._approval else None,
            approval_reason=self._approval.reason if self._approval else None,
            reason=self._reason,
            metadata=self._input.metadata,
            registered_again=self._registered_again is not None,
        )

    # -- Helpers -----------------------------------------------------------------------------------

    def _attempts_left(self) -> int:
        return max(
            0,
            min(
                self._policy.max_attempts_per_code - self._attempts_on_code,
                self._policy.max_attempts_total - self._attempts_total,
            ),
        )

    def _next_resend_at(self) -> datetime | None:
        return self._issued_at + self._policy.resend_interval if self._issued_at else None

    @property
    def _pending_for_caller(self) -> bool:
        """Whether codes and resends are taken: a pending registration, or an email with an
        account within its activation window (``_answer_as_if_pending``) once its first notice is
        out, the moment a new email's registration turns pending after its first code mail."""
        if self._existing_account:
            return self._issued is not None
        return self._state is RegistrationState.PENDING

    @property
    def _takes_resends(self) -> bool:
        """Whether a resend would mail a code now: pending for the caller, no code accepted, the
        wait not about to end (``_ended_unseen``)."""
        return self._pending_for_caller and not self._activation_underway and not self._ended_unseen

    @property
    def _ended_unseen(self) -> bool:
        """Locked out, or past the window, in this workflow task: the wait ends with it, but
        handlers (signals first) may run before the run sees that."""
        return self._locked_out or workflow.now() >= self._expires_at

    @property
    def _activation_underway(self) -> bool:
        """A code was accepted (or staff approved): the account is being activated, or is active
        and the workflow still runs. A code submitted from then on is checked once more without
        counting (``_check_repeated_code``)."""
        accepted = self._code_verified or self._approval is not None
        return accepted and self._state in (
            RegistrationState.PENDING,
            RegistrationState.ACTIVATING,
            RegistrationState.ACTIVE,
        )

    def _resend_reply(self, outcome: ResendOutcome) -> ResendReply:
        return ResendReply(
            outcome=outcome,
            resends_left=self._policy.max_resends - self._resends,
            next_resend_at=self._next_resend_at() if self._pending_for_caller else None,
        )

    def _outcome_for_caller(self) -> ActivationOutcome:
        if self._state is RegistrationState.ALREADY_REGISTERED:  # as a new email's would end
            locked = self._locked_out
            return ActivationOutcome.TOO_MANY_ATTEMPTS if locked else ActivationOutcome.EXPIRED
        return {
            RegistrationState.ACTIVE: ActivationOutcome.ACTIVATED,
            RegistrationState.EXPIRED: ActivationOutcome.EXPIRED,
            RegistrationState.LOCKED: ActivationOutcome.TOO_MANY_ATTEMPTS,
            RegistrationState.FAILED: ActivationOutcome.FAILED,
        }.get(self._state, ActivationOutcome.NOT_PENDING)

    def _new_principal(self) -> CreatePrincipalInput:
        return CreatePrincipalInput(
            principal=NewPrincipal(
                id=self._new_principal_id,  # chosen here, so a retried create is idempotent
                email=self._input.email,
                email_canonical=self._input.canonical_email,
                name=self._input.name,
                phone=self._input.phone,
                locale=self._input.locale,
                tenant=self._input.tenant,
            ),
            sealed_password=self._input.sealed_password,
        )

    def _new_customer(self) -> NewCustomer:
        return NewCustomer(
            id=self._new_customer_id,  # chosen here, so a retried create is idempotent
            email=self._input.email,
            email_canonical=self._input.canonical_email,
            name=self._input.name,
            phone=self._input.phone,
            number_prefix=self._policy.customer_number_prefix,
            tenant=self._input.tenant,
            profile=self._input.profile,
        )

    def _notice(self, sequence: int = 1) -> NoticeInput:
        return NoticeInput(
            email=self._input.email,
            name=self._input.name,
            locale=self._input.locale,
            customer_number=self._customer.number if self._customer else None,
            sequence=sequence,
        )

    @property
    def _in_process(self) -> ProviderProfile:
        assert self._profile is not None, "set first thing in run()"
        return self._profile

    def _identity(self, fn: Callable[[Any, A], Awaitable[R]], arg: A, summary: str) -> Awaitable[R]:
        return _step(fn, arg, summary, self._in_process.identity_in_process)

    def _customers(
        self, fn: Callable[[Any, A], Awaitable[R]], arg: A, summary: str
    ) -> Awaitable[R]:
        return _step(fn, arg, summary, self._in_process.customers_in_process)

    def _mail(
        self,
        fn: Callable[[Any, A], Awaitable[R]],
        arg: A,
        summary: str,
        *,
        deadline: timedelta | None = None,
    ) -> Awaitable[R]:
        return _step(fn, arg, summary, self._in_process.mail_in_process, deadline=deadline)

    # Compensations retry until done: no attempt cap and no deadline; a record that is already
    # gone counts as undone.

    def _delete_principal(self, principal_id: str) -> Awaitable[bool]:
        return _step(
            IdentityActivities.delete_principal,
            PrincipalRef(principal_id=principal_id),
            "undo: delete principal",
            self._in_process.identity_in_process,
            undo=True,
        )

    def _delete_customer(self, customer_id: str) -> Awaitable[bool]:
        return _step(
            CustomerActivities.delete_customer,
            CustomerRef(customer_id=customer_id),
            "undo: delete customer created by this registration",
            self._in_process.customers_in_process,
            undo=True,
        )


def _step(
    fn: Callable[[Any, A], Awaitable[R]],
    arg: A,
    summary: str,
    in_process: bool,
    *,
    undo: bool = False,
    deadline: timedelta | None = None,
) -> Awaitable[R]:
    """In-process providers run as local activities (no server round trip); remote ones as
    regular activities with their own retries and timeouts."""
    if in_process:
        local_deadline = None if undo else (deadline or LOCAL_STEP_DEADLINE)
        return workflow.execute_local_activity_method(
            fn,
            arg,
            start_to_close_timeout=LOCAL_STEP_TIMEOUT,
            schedule_to_close_timeout=local_deadline,
            retry_policy=local_retry(local_deadline) if local_deadline else RETRY,
            summary=summary,
        )
    return workflow.execute_activity_method(
        fn,
        arg,
        start_to_close_timeout=REMOTE_STEP_TIMEOUT,
        schedule_to_close_timeout=None if undo else (deadline or REMOTE_STEP_DEADLINE),
        retry_policy=RETRY,
        summary=summary,
    )


def local_retry(deadline: timedelta) -> RetryPolicy:
    """``RETRY`` for a local step, capped at the attempts that start within ``deadline``.

    sdk-core (temporalio 1.35.0) does not end a local activity at its schedule-to-close once its
    retries wait on workflow timers (backoffs of a minute and more): measured on the dev
    server, an in-process mail step that kept failing was still being retried after 7 minutes
    with its 5-minute deadline, and the registration stayed at ``starting``. The attempt cap
    ends it in time; the deadline stays, for a core that enforces it."""
    attempts, waited, backoff = 1, timedelta(0), RETRY.initial_interval
    while waited + backoff <= deadline:
        waited += backoff
        attempts += 1
        backoff = min(backoff * RETRY.backoff_coefficient, RETRY.maximum_interval or backoff)
    return dataclasses.replace(RETRY, maximum_attempts=attempts)


def _describe(err: BaseException) -> str:
    """The root cause's type and message, e.g. ``NotFound: principal ... no longer exists``."""
    cause: BaseException = err
    while cause.__cause__ is not None:
        cause = cause.__cause__
    kind = (
        cause.type if isinstance(cause, ApplicationError) and cause.type else type(cause).__name__
    )
    # ``str()`` of an ApplicationError already leads with its type; the message alone does not.
    return f"{kind}: {cause.message if isinstance(cause, FailureError) else cause}"
