"""SweepWorkflow: undo what compensation could not reach.

A registration that was terminated never compensates, and a provider's records can be edited by
hand, so an inactive login or a customer a registration created can outlive its registration.
The worker runs this workflow on a Temporal Schedule (``SCHEDULE_ID``, every
``REGISTRATION_SWEEP_INTERVAL``, overlaps skipped; ``worker.py``). Each run pages through the
leftovers of every provider that can list them (``activities.roles.Leftovers``), customers first,
has each judged by its registration (``activities/sweep.py``: running or ended active: skipped;
ended otherwise: undone through the role's own undo), and reports what it found and did: the
``status`` query, the run's current details and result in the UI, and the
``registration_sweep_records{kind,outcome}`` metric.

Records younger than the grace period (``REGISTRATION_SWEEP_GRACE``) are not judged. An undo
that keeps failing is counted as failed and tried again by the next run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.sweep import (
        Judged,
        Kind,
        PageRequest,
        SweepActivities,
        UndoOutcome,
        Verdict,
    )

SCHEDULE_ID = "registration-sweep"
PAGE_SIZE = 100
LIST_TIMEOUT = timedelta(minutes=2)
"""A page: the provider's list and a describe per record."""
UNDO_TIMEOUT = timedelta(seconds=30)
UNDO_DEADLINE = timedelta(minutes=5)
"""How long one undo retries before it counts as failed (the next run tries again)."""
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


class SweepInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    grace: timedelta = timedelta(minutes=15)
    """Records younger than this are not judged."""
    page_size: int = Field(PAGE_SIZE, ge=1, le=1000)
    resume: SweepStatus | None = None
    """Where the previous run stopped (continue-as-new of a long sweep)."""


class SweepStatus(BaseModel):
    """What the sweep found and did (the ``status`` query and the run's result)."""

    state: str = "starting"
    """``starting``, ``sweeping <kind>s``, ``finished``."""
    created_before: datetime | None = None
    kinds: list[Kind] = Field(default_factory=list)
    """The kinds of record swept (their provider can list leftovers)."""
    kind: Kind | None = None
    after: str | None = None
    """The cursor of the page the run is at (resumed after a continue-as-new)."""
    found: int = 0
    """Records listed (older than the grace period) and judged."""
    undone: int = 0
    """Leftovers undone (or found already gone by the undo)."""
    skipped: int = 0
    """Records whose registration is running, ended active, or unknown to Temporal."""
    failed: int = 0
    """Undos that failed (tried again by the next run)."""
    skipped_because: dict[str, int] = Field(default_factory=dict)
    """``skipped`` by verdict: ``running``, ``active``, ``unknown``, ``spared``."""
    unknown: list[str] = Field(default_factory=list)
    """The first records whose registration Temporal does not know, ``<kind> <id>``."""
    failures: list[str] = Field(default_factory=list)
    """The first failed undos, ``<kind> <id>: <error>``."""

    def summary(self) -> str:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped_because.items()))
        return (
            f"{self.state}: {self.found} found, {self.undone} undone,"
            f" {self.skipped} skipped{f' ({why})' if why else ''}, {self.failed} failed"
        )


SweepInput.model_rebuild()
LISTED = 20
"""How many unknown records and failures the status names."""


@workflow.defn
class SweepWorkflow:
    @workflow.init
    def __init__(self, input: SweepInput) -> None:
        self._status = input.resume or SweepStatus()
        meter = workflow.metric_meter()
        self._records = meter.create_counter(
            "registration_sweep_records",
            "records the sweep judged, by kind and outcome",
        )

    @workflow.query
    def status(self) -> SweepStatus:
        return self._status

    @workflow.run
    async def run(self, input: SweepInput) -> SweepStatus:
        status = self._status
        if status.created_before is None:
            status.created_before = workflow.now() - input.grace
            status.kinds = await workflow.execute_activity_method(
                SweepActivities.sweepable,
                start_to_close_timeout=LIST_TIMEOUT,
                retry_policy=RETRY,
                summary="which providers can list their leftovers",
            )
            status.kind = status.kinds[0] if status.kinds else None
        while status.kind is not None:
            status.state = f"sweeping {status.kind}s"
            self._show()
            page = await workflow.execute_activity_method(
                SweepActivities.judge_leftovers,
                PageRequest(
                    kind=status.kind,
                    created_before=status.created_before,
                    after=status.after,
                    limit=input.page_size,
                ),
                start_to_close_timeout=LIST_TIMEOUT,
                retry_policy=RETRY,
                summary=f"list {status.kind}s left behind and judge them",
            )
            for record in page.records:
                await self._settle(record)
            status.after = page.after
            if status.after is None:
                following = status.kinds.index(status.kind) + 1
                status.kind = status.kinds[following] if following < len(status.kinds) else None
            if status.kind is not None and workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(SweepInput(grace=input.grace, resume=status))
        status.state = "finished"
        self._show()
        workflow.logger.info("sweep %s", status.summary())
        return status

    async def _settle(self, record: Judged) -> None:
        status = self._status
        status.found += 1
        verdict = record.verdict
        if verdict is Verdict.ENDED:
            try:
                undone = await workflow.execute_activity_method(
                    SweepActivities.undo_leftover,
                    record,
                    start_to_close_timeout=UNDO_TIMEOUT,
                    schedule_to_close_timeout=UNDO_DEADLINE,
                    retry_policy=RETRY,
                    summary=f"undo {record.kind} {record.id} ({record.ended_as or 'ended'})",
                )
            except ActivityError as err:
                status.failed += 1
                if len(status.failures) < LISTED:
                    cause = err.cause or err
                    status.failures.append(f"{record.kind} {record.id}: {cause}")
                self._count(record, "failed")
                return
            if undone.outcome is not UndoOutcome.SPARED:
                status.undone += 1
                self._count(record, str(undone.outcome))
                return
            verdict = undone.verdict
            reason = "spared"
        else:
            reason = str(verdict)
        status.skipped += 1
        status.skipped_because[reason] = status.skipped_because.get(reason, 0) + 1
        if verdict is Verdict.UNKNOWN and len(status.unknown) < LISTED:
            status.unknown.append(f"{record.kind} {record.id} ({record.registration})")
        self._count(record, f"skipped_{reason}")

    def _count(self, record: Judged, outcome: str) -> None:
        self._records.add(1, {"kind": str(record.kind), "outcome": outcome})

    def _show(self) -> None:
        """The counters as the run's current details (the Temporal UI shows them)."""
        workflow.set_current_details(self._status.summary())
