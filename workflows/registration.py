"""RegistrationWorkflow: one customer's sign-up, from first request to active account.

The story, top to bottom (``run``):
1. look the email up; an existing active account gets a "you already have an account" mail, and
   the caller gets the answers of a new registration, the first and every later one, until the
   activation window ends (no account enumeration);
2. create the login, inactive, with the sealed password (unless the identity provider creates
   logins only once the email is proven: then the password stays sealed here until step 5);
3. mail an activation code (the workflow keeps only its keyed HMAC);
4. wait up to the TTL for the code (update/signal), a staff approval, resends, or a lockout;
5. link the customer record found by email, or create one, then activate the login with the
   link; send a welcome mail (best effort).
Each step that changes something has its undo; expiry, lockout, cancellation and failures run
the undos in reverse (``workflows/saga.py``). The code's rules live in ``workflows/code_gate.py``,
how a provider call runs in ``workflows/steps.py``; what the providers are like comes from their
declared ``IdentityCapabilities``, never from their names.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

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
    from activities.roles import (
        CodeOwner,
        Customer,
        CustomerLink,
        IdentityCapabilities,
        LoginCreated,
        NewCustomer,
        NewPrincipal,
        Principal,
        customer_part,
    )
    from workflows.code_gate import CodeGate, ProviderLockout
    from workflows.models import (
        ActivationOutcome,
        ActivationReply,
        Approval,
        CodeSubmission,
        PriorFailures,
        RegistrationInput,
        RegistrationResult,
        RegistrationState,
        RegistrationStatus,
        ResendOutcome,
        ResendReply,
        ResendRequest,
    )
    from workflows.saga import Saga, Undo, run_to_completion
    from workflows.steps import LOCAL_STEP_DEADLINE, A, Activity, R, ask, step
    from workflows.visibility import Visibility

WELCOME_DEADLINE = timedelta(minutes=10)
ENDINGS = frozenset(RegistrationState) - {
    RegistrationState.STARTING,
    RegistrationState.PENDING,
    RegistrationState.ACTIVATING,
}
PROVIDER_LOCKOUT = "TooManyAttempts"
"""Error type of a code check the identity provider refused (``activities.errors``)."""
ACCOUNT_EXISTS = "AccountExists"
"""Error type of a login the provider cannot create: the email has an account there that the
lookup could not see (``activities.errors``)."""
NO_ATTEMPTS_LEFT = "NoAttemptsLeft"
"""Error type of a code the update validator refuses because the current code has no attempts
left, or the registration is locked out (``_code_only_while_pending``): the client answers it
as the check would have, ``too_many_attempts`` with no attempts left."""


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
        self._account_at_activation = False
        """The provider found an account at step 5, after the address was proven."""
        self._gate = CodeGate(
            input.policy, self._started_at, workflow.now, prior=input.prior_failures
        )
        self._saga = Saga(on_cancel=self._cancel_seen)
        self._registered_again: RegistrationInput | None = None
        """The newest ``register`` for this email that no code of this run answers; it starts
        when this run ends (``register_again``)."""
        self._carried: PriorFailures | None = None
        """A locked registration's wrong codes, handed to the next one (``_hold_lockout``)."""
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

    async def _register(self) -> RegistrationResult:
        # How to run the providers, and what they are like (inside the ``try`` of ``run``: a
        # cancel that reaches a registration before its first step still ends it as cancelled).
        self._profile = await ask(
            ProfileActivities.describe_providers, "which providers run in-process, and their shape"
        )
        shape = self._profile.identity

        # 1. Is this email already someone's account?
        existing = await self._identity(
            IdentityActivities.find_principal,
            EmailLookup(email_canonical=self._input.canonical_email),
            "look up the email",
        )
        if existing is not None and (existing.active or not existing.replaceable):
            await self._answer_as_if_pending()  # an inactive one owned by someone else too
            if self._gate.locked_out:  # as a new email's registration would be
                await self._hold_lockout()
            return self._result()
        if existing is not None:
            # An inactive leftover of an earlier registration that was never cleaned up (e.g. a
            # terminated workflow): it cannot log in, so it is replaced by this registration.
            await self._undo_principal(existing.id)

        # 2. The login, inactive until the email is proven. Its undo goes in first: a create
        # whose answer was lost is undone too (by the id chosen here; undoing nothing is a no-op).
        if shape.login_created is LoginCreated.SIGNUP:
            self._saga.add(lambda: self._undo_principal(self._login_id))
            try:
                self._principal = await self._saga.step(
                    self._identity(
                        IdentityActivities.create_principal,
                        self._new_login(),
                        "create inactive principal",
                    )
                )
            except (ActivityError, ApplicationError) as err:
                if _error_type(err) != ACCOUNT_EXISTS:
                    raise
                await self._saga.compensate()  # whatever a half-done create left
                # The create took its time; staff see why in the reason.
                await self._answer_as_if_pending(decoy=False, reason=_describe(err))
                return self._result()
        # From now on a code may be accepted, and step 5 run, in the same workflow task as a
        # cancel: the undos of what step 5 creates under the ids chosen here go in now.
        if not shape.one_record:
            self._saga.add(lambda: self._undo_customer(self._new_customer_id))
        if shape.login_created is LoginCreated.ACTIVATION:
            self._saga.add(lambda: self._undo_principal(self._new_principal_id))

        # 3. The activation code, by mail.
        await self._gate.issue_first(self._issue)
        self._state = RegistrationState.PENDING
        self._registered_again = None  # the code just mailed answers a register made meanwhile
        self._visibility.pending(self._expires_at)

        # 4. Wait for the code, an approval, expiry or a lockout.
        if not await self._activation_arrived():
            locked = self._gate.locked_out
            ending = RegistrationState.LOCKED if locked else RegistrationState.EXPIRED
            await self._end_with_compensation(ending, None)
            if locked:
                await self._hold_lockout()
            return self._result()

        # 5. Customer record (linked or created), then the login goes active with the link.
        self._state = RegistrationState.ACTIVATING
        if not self._profile.activation_in_process:  # else nobody could see it
            self._visibility.state(self._state)
        try:
            await self._link_customer_and_activate(shape)
        except (ActivityError, ApplicationError) as err:
            if _error_type(err) != ACCOUNT_EXISTS:
                raise
            await self._account_found_at_activation(_describe(err))
            return self._result()
        self._saga.commit()
        self._activated_at = workflow.now()
        self._visibility.activation_latency(self._activated_at - self._started_at)
        self._end(RegistrationState.ACTIVE)
        await self._send_welcome()
        return self._result()

    async def _account_found_at_activation(self, reason: str) -> None:
        """Step 5's other ending: the provider found an account for the address that this
        registration may not take over (a login created only now meets one of another kind).
        The address is proven by now, so its owner is told (the notice points to the password
        reset) and the caller hears ``already_registered``; what step 5 created is undone."""
        self._account_at_activation = True
        self._end(RegistrationState.ALREADY_REGISTERED, reason)
        await self._saga.compensate()
        await self._mail(
            MailActivities.send_already_registered, self._notice(), "mail: already registered"
        )

    async def _answer_as_if_pending(self, *, decoy: bool = True, reason: str | None = None) -> None:
        """Step 1's other ending. The owner of the account is told (instead of getting a code);
        the caller cannot tell: wrong codes, resends and their limits, and finally expiry, are
        answered exactly as for a new email until the activation window ends, and the first mail
        goes out no sooner (``decoy_create`` spends what creating a login would). The status
        query (staff) and the search attributes say ``already_registered`` from the start."""
        self._existing_account = True
        if decoy and self._shape.login_created is LoginCreated.SIGNUP:
            await self._identity(
                IdentityActivities.decoy_create,
                self._new_login(),
                "as long as creating a principal (no account enumeration)",
            )
        await self._gate.issue_first(self._issue)
        self._registered_again = None  # as for a new email: this notice answers it
        self._end(RegistrationState.ALREADY_REGISTERED, reason)
        await self._activation_arrived()  # no code exists: only expiry or a lockout ends it
        self._existing_account = False

    # -- Step 3 and 4: codes and waiting --------------------------------------------------------

    async def _issue(self, sequence: int) -> IssuedActivation:
        """Mails code number ``sequence``; for an email with an account, its owner's notice."""
        if self._existing_account:
            await self._mail(
                MailActivities.send_already_registered,
                self._notice(sequence),
                f"mail: already registered #{sequence}",
            )
            return IssuedActivation(sequence=sequence, code_digest=NO_CODE)
        provider_code = self._shape.code is CodeOwner.PROVIDER
        return await step(
            MailActivities.issue_activation,
            IssueActivationInput(
                registration_id=workflow.info().workflow_id,
                principal_id=self._login_id,
                sequence=sequence,
                email=self._input.email,
                name=self._input.name,
                locale=self._input.locale,
                expires_at=self._expires_at,
            ),
            f"mail activation code #{sequence}",
            # The step asks the identity provider for its code: in-process only if both are.
            in_process=self._profile_known.mail_in_process
            and (not provider_code or self._profile_known.identity_in_process),
        )

    async def _activation_arrived(self) -> bool:
        """True once a valid code or an approval came in; False on expiry or lockout."""
        try:
            await workflow.wait_condition(
                lambda: self._gate.decided,
                timeout=self._expires_at - workflow.now(),
                timeout_summary="activation window",
            )
        except TimeoutError:
            return False
        return self._gate.let_in

    async def _verify(self, issued: IssuedActivation, submission: CodeSubmission) -> bool:
        """The constant-time check against the HMAC of the current code; where the identity
        provider has the last word on codes, a code that passes is confirmed there, once."""
        confirm = self._shape.code is CodeOwner.PROVIDER and not self.activation_underway()
        try:
            return await step(
                CodeActivities.verify_activation,
                VerifyActivationInput(
                    registration_id=workflow.info().workflow_id,
                    issued=issued,
                    submission=submission,
                    principal_id=self._login_id if confirm else None,
                ),
                "verify activation code",
                in_process=not confirm or self._profile_known.identity_in_process,
                deadline=LOCAL_STEP_DEADLINE,
            )
        except (ActivityError, ApplicationError) as err:
            if _error_type(err) == PROVIDER_LOCKOUT:
                raise ProviderLockout from err
            raise

    async def _hold_lockout(self) -> None:
        """A locked registration stays for the email's failure window (from its first wrong
        code), so that registering again does not bring a fresh set of guesses: a ``register``
        meanwhile continues as the next registration with these wrong codes counted against
        ``max_failures_per_window``, at once while the email has some left, else once the window
        ends. Without one, the run ends with the window. A cancel (staff) releases the email."""
        carried = self._gate.carried()
        window_ends = carried.since + self._policy.failure_window
        exhausted = carried.count >= self._policy.max_failures_per_window
        if self._cancels:  # staff cancelled while the undos ran: released already
            return
        if workflow.now() < window_ends:
            try:
                await workflow.wait_condition(
                    lambda: self._registered_again is not None and not exhausted,
                    timeout=window_ends - workflow.now(),
                    timeout_summary="failure window",
                )
            except TimeoutError:
                pass
            except asyncio.CancelledError:
                workflow.logger.info("cancelled: the email's failure window is released")
                self._cancel_seen()
                return
        if workflow.now() < window_ends:
            self._carried = carried

    # -- Messages: codes, resends, approval, a repeated register ---------------------------------

    @workflow.update
    async def submit_activation_code(self, submission: CodeSubmission) -> ActivationReply:
        """Check a code (or link token) and, if right, answer once the account is active."""
        reply = await self._gate.check(submission, self, self._verify)
        if reply.outcome is not ActivationOutcome.ACTIVATED:
            return reply
        await workflow.wait_condition(
            lambda: self._state not in (RegistrationState.PENDING, RegistrationState.ACTIVATING)
        )
        return ActivationReply(outcome=self.outcome_for_caller())

    @submit_activation_code.validator
    def _code_only_while_pending(self, submission: CodeSubmission) -> None:
        """Rejected here, a code never reaches history: nothing pending, and (as the gate would
        answer it, without a check) no attempts left on the current code or a lockout, so a
        flood of guesses past that point costs the server nothing. Validators do not run on
        replay: recorded histories are unaffected."""
        if self.activation_underway():
            return
        self._require_pending()
        if self._gate.locked_out or self._gate.attempts_left() == 0:
            raise ApplicationError(
                "no attempts left on the current code", type=NO_ATTEMPTS_LEFT, non_retryable=True
            )

    @workflow.signal
    async def activate(self, submission: CodeSubmission) -> None:
        """Fire-and-forget form of ``submit_activation_code`` (e.g. from the Temporal UI)."""
        try:
            await self._gate.check(submission, self, self._verify)
        except FailureError as err:  # a signal must not fail the workflow; status tells
            workflow.logger.warning("code check failed: %s", _describe(err))

    @workflow.signal
    def approve(self, approval: Approval) -> None:
        """Staff activation without a code; ignored unless the registration is pending."""
        if self._state is RegistrationState.PENDING and self._gate.approve(approval):
            workflow.logger.info("approved by %s: %s", approval.operator, approval.reason)

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
        if self._takes_resends():
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

    async def _resend(self, request: ResendRequest) -> ResendReply:
        async def issue(sequence: int) -> IssuedActivation:
            workflow.logger.info(
                "resending the activation code (requested by %s)", request.requested_by
            )
            return await self._issue(sequence)

        return await self._gate.resend(request, self, issue)

    async def _resend_quietly(self, request: ResendRequest) -> ResendReply | None:
        """``_resend`` for a signal, which must not fail the workflow: None if it failed (the
        log and the status tell)."""
        try:
            return await self._resend(request)
        except FailureError as err:
            workflow.logger.warning("resend failed: %s", _describe(err))
            return None

    def _require_pending(self) -> None:
        """Rejected updates never reach history: cheap for the server and for the caller."""
        if not self.pending_for_caller():
            raise ValueError(f"no activation is pending (registration is {self._state.value})")

    # -- Step 5: customer and activation ----------------------------------------------------------

    async def _link_customer_and_activate(self, shape: IdentityCapabilities) -> None:
        """With identity and customers both in-process, one local activity makes both calls
        (``activities/activation.py``); otherwise one activity per call. A one-record provider's
        login brings its own customer part; a provider that creates logins only now creates it
        here, active."""
        activation = ActivatePrincipalInput(
            principal_id=self._login_id,
            login=self._new_login() if shape.login_created is LoginCreated.ACTIVATION else None,
        )
        if self._profile_known.activation_in_process:
            done = await self._saga.step(
                step(
                    ActivationActivities.link_customer_and_activate,
                    LinkAndActivateInput(
                        customer=self._new_customer(),
                        principal=activation,
                        one_record=shape.one_record,
                    ),
                    "link or create customer, activate principal with the link",
                    in_process=True,
                ),
                undo=lambda done: self._undo_created_customer(done.link),
            )
            link, principal = done.link, done.principal
        else:
            linked = None
            if not shape.one_record:
                linked = await self._saga.step(
                    self._customers(
                        CustomerActivities.link_or_create_customer,
                        self._new_customer(),
                        "link or create customer",
                    ),
                    undo=self._undo_created_customer,
                )
            principal = await self._identity(
                IdentityActivities.activate_principal,
                activation.model_copy(update={"customer": linked.customer if linked else None}),
                "activate principal with customer link",
            )
            link = linked or customer_part(principal)
        # Only now, as in one step: a failed activation's customer is undone, so neither the
        # status nor the search attributes may name it.
        self._principal, self._customer = principal, link.customer
        self._linked_existing = not link.created  # imported before; never undone

    def _undo_created_customer(self, link: CustomerLink) -> Undo | None:
        """Beyond the up-front undo of ``_new_customer_id``: a customer a provider created under
        an id of its own is undone by that id."""
        customer = link.customer
        if not link.created or customer.id == self._new_customer_id:
            return None
        return lambda: self._undo_customer(customer.id)

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
        if self._state in ENDINGS:
            workflow.logger.info("already %s; %s ignored", self._state.value, state.value)
            return
        self._state = state
        self._reason = reason
        self._visibility.finished(state, self._customer.number if self._customer else None)

    async def _end_with_compensation(self, state: RegistrationState, reason: str | None) -> None:
        self._end(state, reason)
        await self._saga.compensate()

    async def _finish_handlers(self) -> None:
        """Handlers still answering callers (a resend mid-mail) finish before the run ends. The
        outcome is decided by then: a cancel arriving now changes nothing, as during the welcome
        mail."""
        try:
            await workflow.wait_condition(workflow.all_handlers_finished)
        except asyncio.CancelledError:
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
            again = self._registered_again.model_copy(update={"prior_failures": self._carried})
            workflow.continue_as_new(again, search_attributes=self._visibility.next_run())

    def _cancel_seen(self) -> None:
        """A cancel drops a ``register`` that came in before it: staff stopped this email's
        registration. One that comes in after the cancel still starts."""
        self._cancels += 1
        if self._registered_again is not None:
            workflow.logger.info("cancelled: the registration requested before is dropped")
            self._registered_again = None

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
        gate = self._gate
        return RegistrationStatus(
            state=self._state,
            started_at=self._started_at,
            expires_at=self._expires_at,
            activated_at=self._activated_at,
            attempts_left=gate.total_attempts_left(),
            code_attempts_left=gate.attempts_left(),
            resends_left=gate.resends_left(),
            next_resend_at=(
                gate.next_resend_at() if self._state is RegistrationState.PENDING else None
            ),
            principal_id=self._principal.id if self._principal else None,
            customer_id=self._customer.id if self._customer else None,
            customer_number=self._customer.number if self._customer else None,
            linked_existing_customer=self._linked_existing,
            approved_by=gate.approval.operator if gate.approval else None,
            approval_reason=gate.approval.reason if gate.approval else None,
            reason=self._reason,
            metadata=self._input.metadata,
            registered_again=self._registered_again is not None,
        )

    # -- What the code gate asks (``workflows.code_gate.Registration``) -------------------------

    def pending_for_caller(self) -> bool:
        """Whether codes and resends are taken: a pending registration, or an email with an
        account within its activation window (``_answer_as_if_pending``) once its first notice is
        out, the moment a new email's registration turns pending after its first code mail."""
        if self._existing_account:
            return self._gate.issued is not None
        return self._state is RegistrationState.PENDING

    def ended_unseen(self) -> bool:
        """Locked out, or past the window, in this workflow task: the wait ends with it, but
        handlers (signals first) may run before the run sees that."""
        return self._gate.locked_out or workflow.now() >= self._expires_at

    def activation_underway(self) -> bool:
        """A code was accepted (or staff approved): the account is being activated, or is active
        and the workflow still runs."""
        accepted = self._gate.accepted or self._gate.approval is not None
        return accepted and self._state in (
            RegistrationState.PENDING,
            RegistrationState.ACTIVATING,
            RegistrationState.ACTIVE,
        )

    def outcome_for_caller(self) -> ActivationOutcome:
        if self._account_at_activation:  # the caller proved the address: no secret to keep
            return ActivationOutcome.ALREADY_REGISTERED
        if self._state is RegistrationState.ALREADY_REGISTERED:  # as a new email's would end
            locked = self._gate.locked_out
            return ActivationOutcome.TOO_MANY_ATTEMPTS if locked else ActivationOutcome.EXPIRED
        return {
            RegistrationState.ACTIVE: ActivationOutcome.ACTIVATED,
            RegistrationState.EXPIRED: ActivationOutcome.EXPIRED,
            RegistrationState.LOCKED: ActivationOutcome.TOO_MANY_ATTEMPTS,
            RegistrationState.FAILED: ActivationOutcome.FAILED,
        }.get(self._state, ActivationOutcome.NOT_PENDING)

    def _takes_resends(self) -> bool:
        """Whether a resend would mail a code now: pending for the caller, no code accepted, the
        wait not about to end."""
        return (
            self.pending_for_caller() and not self.activation_underway() and not self.ended_unseen()
        )

    # -- Inputs of the steps ---------------------------------------------------------------------

    def _new_login(self) -> CreatePrincipalInput:
        return CreatePrincipalInput(
            principal=NewPrincipal(
                id=self._new_principal_id,  # chosen here, so a retried create is idempotent
                email=self._input.email,
                email_canonical=self._input.canonical_email,
                name=self._input.name,
                phone=self._input.phone,
                locale=self._input.locale,
                tenant=self._input.tenant,
                customer=self._new_customer(),
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

    # -- Provider calls, per role --------------------------------------------------------------

    @property
    def _login_id(self) -> str:
        """The login's id as the provider answered its create (which may be an id of its own
        that it can resolve, e.g. for a record it bound instead of creating); the id chosen
        here until then."""
        return self._principal.id if self._principal else self._new_principal_id

    @property
    def _profile_known(self) -> ProviderProfile:
        assert self._profile is not None, "set first thing in _register()"
        return self._profile

    @property
    def _shape(self) -> IdentityCapabilities:
        return self._profile_known.identity

    def _identity(self, fn: Activity[A, R], arg: A, summary: str) -> Awaitable[R]:
        return step(fn, arg, summary, in_process=self._profile_known.identity_in_process)

    def _customers(self, fn: Activity[A, R], arg: A, summary: str) -> Awaitable[R]:
        return step(fn, arg, summary, in_process=self._profile_known.customers_in_process)

    def _mail(
        self, fn: Activity[A, R], arg: A, summary: str, *, deadline: timedelta | None = None
    ) -> Awaitable[R]:
        return step(
            fn, arg, summary, in_process=self._profile_known.mail_in_process, deadline=deadline
        )

    # Undos retry until done (``workflows/steps.py``); a record already gone counts as undone.

    def _undo_principal(self, principal_id: str) -> Awaitable[bool]:
        return step(
            IdentityActivities.undo_principal,
            PrincipalRef(principal_id=principal_id),
            f"undo: {self._shape.login_undo.value} principal",
            in_process=self._profile_known.identity_in_process,
            undo=True,
        )

    def _undo_customer(self, customer_id: str) -> Awaitable[bool]:
        return step(
            CustomerActivities.undo_customer,
            CustomerRef(customer_id=customer_id),
            "undo: customer created by this registration",
            in_process=self._profile_known.customers_in_process,
            undo=True,
        )


def _error_type(err: ActivityError | ApplicationError) -> str | None:
    """The provider error's type: a remote step fails as an ActivityError caused by it, an
    in-process one (a local activity) as the ApplicationError itself."""
    cause = err.cause if isinstance(err, ActivityError) else err
    return cause.type if isinstance(cause, ApplicationError) else None


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
