"""The sweep's activities: list what registrations may have left behind, judge each record by its
registration as Temporal knows it, and undo the ones whose registration is over without an
account, through the role's own undo (``workflows/sweep.py`` runs them).

Compensation never runs for a terminated registration, and records can be edited by hand at a
provider, so an inactive login (or a customer that no active login is linked to) can outlive its
registration. Each record names its registration: the workflow ID the provider recorded, else the
one its email gives (``common.identifiers``, in the worker's ID mode). Temporal then decides:

* the registration is running (or continued as new): it owns the record, which is never touched;
* it completed ``active``: the account is live (an active login is never listed anyway);
* Temporal has no such workflow (its history is past the namespace's retention, or the ID mode or
  key changed): unknown, left alone and counted, for staff to look at;
* otherwise it ended without an account (terminated, failed, cancelled, timed out, expired,
  locked, already registered): the record is a leftover, and it is undone.

An undo describes the registration again right before it calls the provider, so a registration
that started for the email since the page was judged keeps its records.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.roles import CustomerProvider, IdentityProvider, Leftovers
from common.identifiers import WorkflowIdMode, registration_id
from workflows.models import RegistrationResult, RegistrationState


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Kind(StrEnum):
    """The role whose records are swept, named by its record."""

    CUSTOMER = "customer"
    PRINCIPAL = "principal"


class Verdict(StrEnum):
    """What the record's registration says about it."""

    RUNNING = "running"
    """Its registration is running: it owns the record. Skipped."""
    ACTIVE = "active"
    """Its registration ended with an active account. Skipped."""
    UNKNOWN = "unknown"
    """Temporal has no registration under its workflow ID. Skipped (for staff to look at)."""
    ENDED = "ended"
    """Its registration ended without an account: a leftover, undone."""


class PageRequest(_Model):
    kind: Kind
    created_before: datetime
    after: str | None = None
    limit: int = 100


class Judged(_Model):
    """A listed record and its registration's verdict (the workflow ID, never the email)."""

    kind: Kind
    id: str
    registration: str
    verdict: Verdict
    ended_as: str | None = None
    """How the registration ended (``terminated``, ``expired``, ...), where it did."""


class JudgedPage(_Model):
    records: list[Judged] = Field(default_factory=list)
    after: str | None = None


class UndoOutcome(StrEnum):
    UNDONE = "undone"
    GONE = "gone"
    """Already gone when the undo came (the provider's undo answered ``False``)."""
    SPARED = "spared"
    """Its registration had started again (or ended active) by the time of the undo."""


class Undone(_Model):
    outcome: UndoOutcome
    verdict: Verdict


class SweepActivities:
    """Bound to the worker's client (to describe registrations) and providers."""

    def __init__(
        self,
        client: Client,
        identity: IdentityProvider,
        customers: CustomerProvider,
        workflow_id_mode: WorkflowIdMode,
        id_key: bytes | None,
    ) -> None:
        self._client = client
        self._identity = identity
        self._customers = customers
        self._mode = workflow_id_mode
        self._id_key = id_key

    def _lister(self, kind: Kind) -> Leftovers | None:
        provider = self._identity if kind is Kind.PRINCIPAL else self._customers
        return provider if isinstance(provider, Leftovers) else None

    @activity.defn
    async def sweepable(self) -> list[Kind]:
        """The kinds whose provider can list its leftovers: customers first, as compensation
        undoes a customer before the login it was for."""
        return [kind for kind in (Kind.CUSTOMER, Kind.PRINCIPAL) if self._lister(kind)]

    @activity.defn
    async def judge_leftovers(self, request: PageRequest) -> JudgedPage:
        """One page of the provider's leftovers, each with its registration's verdict."""
        lister = self._lister(request.kind)
        if lister is None:
            return JudgedPage()
        page = await lister.list_leftovers(request.created_before, request.after, request.limit)
        records = []
        for record in page.records:
            workflow_id = record.registration or registration_id(
                record.email_canonical, self._mode, self._id_key
            )
            verdict, ended_as = await self._verdict(workflow_id)
            records.append(
                Judged(
                    kind=request.kind,
                    id=record.id,
                    registration=workflow_id,
                    verdict=verdict,
                    ended_as=ended_as,
                )
            )
        return JudgedPage(records=records, after=page.after)

    @activity.defn
    async def undo_leftover(self, record: Judged) -> Undone:
        """The role's own undo (idempotent), once the registration is seen to be over again."""
        verdict, _ = await self._verdict(record.registration)
        if verdict is not Verdict.ENDED:
            return Undone(outcome=UndoOutcome.SPARED, verdict=verdict)
        if record.kind is Kind.PRINCIPAL:
            undone = await self._identity.undo_principal(record.id)
        else:
            undone = await self._customers.undo_customer(record.id)
        activity.logger.info(
            "sweep: %s %s %s", record.kind, record.id, "undone" if undone else "gone"
        )
        return Undone(outcome=UndoOutcome.UNDONE if undone else UndoOutcome.GONE, verdict=verdict)

    async def _verdict(self, workflow_id: str) -> tuple[Verdict, str | None]:
        try:
            description = await self._client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return Verdict.UNKNOWN, None
            raise
        status = description.status
        if status in (
            None,
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
        ):
            return Verdict.RUNNING, None
        if status is WorkflowExecutionStatus.COMPLETED:
            run = self._client.get_workflow_handle(
                workflow_id, run_id=description.run_id, result_type=RegistrationResult
            )
            result = await run.result(follow_runs=False)
            if result.state is RegistrationState.ACTIVE:
                return Verdict.ACTIVE, str(result.state)
            return Verdict.ENDED, str(result.state)
        return Verdict.ENDED, status.name.lower()
