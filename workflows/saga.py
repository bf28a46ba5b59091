"""Compensations for the registration: each step registers its undo once it has succeeded, and
``compensate`` runs the undos newest first, to completion, even while the workflow is cancelled.

An undo that fails for good (the provider rejects it with a non-retryable error, so the activity's
own retries stop) does not stop the others: the rest still run, and the failed ones are tried
again after a durable pause that doubles up to ``UNDO_PAUSE_MAX``, until they are done. A rejection
may need someone to fix the record at the provider; the workflow stays open and says so in its
log until then, instead of leaving the other records behind.

Cancellation is the subtle part, twice over:
- A step that is running when a cancel arrives is allowed to finish (it is shielded), so its
  outcome is known: a customer that was created is then deleted, instead of being left behind
  because the cancel cut in between the call and its bookkeeping.
- A local activity's effect can outlive the workflow task that ran it: if that task is rejected
  (a cancel arrived while the workflow was completing), the replay takes the cancel path and never
  reaches the step again. So undos of records whose id the workflow chose itself are registered
  up front with ``add`` (a delete of an id that was never created is a no-op): they cover that
  case too, and they can never touch a record this workflow did not create.

Order: undos run newest first, like the steps they undo in reverse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import FailureError

T = TypeVar("T")

Undo = Callable[[], Awaitable[object]]

UNDO_PAUSE_FIRST = timedelta(minutes=1)
UNDO_PAUSE_MAX = timedelta(hours=1)


async def run_to_completion(action: Awaitable[T]) -> tuple[T, bool]:
    """Await ``action`` to its end whatever cancels the caller; says whether a cancel came in.

    A step that fails after a cancel came in is reported as the cancellation, the caller's intent.
    """
    task = asyncio.ensure_future(action)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled and (task.cancelled() or task.exception() is not None):
        raise asyncio.CancelledError from (None if task.cancelled() else task.exception())
    return task.result(), cancelled


class Saga:
    def __init__(self, on_cancel: Callable[[], None] = lambda: None) -> None:
        """``on_cancel`` is told of a cancel that comes in while ``compensate`` runs, which goes
        on regardless (the workflow's owner may want to know: a cancel has meaning beyond it)."""
        self._undos: list[Undo] = []
        self._on_cancel = on_cancel

    async def step(self, action: Awaitable[T], undo: Callable[[T], Undo | None] | None = None) -> T:
        """Run one step; if it succeeds, remember how to undo it (``undo`` may decide, from the
        result, that nothing beyond the up-front undos is needed). A cancel that arrived while
        the step ran is raised after the undo is registered."""
        result, cancelled = await run_to_completion(action)
        if undo is not None and (registered := undo(result)) is not None:
            self._undos.append(registered)
        if cancelled:
            raise asyncio.CancelledError
        return result

    def add(self, undo: Undo) -> None:
        """Register an undo that is safe to run whether or not its step happens."""
        self._undos.append(undo)

    def commit(self) -> None:
        """The registration is complete: nothing done so far may be undone any more."""
        self._undos.clear()

    async def compensate(self) -> None:
        """Undo every registered step, newest first, each until it is done (module docstring)."""
        pending, self._undos = self._undos[::-1], []
        pause = UNDO_PAUSE_FIRST
        while True:
            failed: list[Undo] = []
            for undo in pending:
                try:
                    _, cancelled = await run_to_completion(undo())
                    if cancelled:
                        self._on_cancel()
                except FailureError as err:
                    workflow.logger.warning("undo failed, tried again in %s: %s", pause, err)
                    failed.append(undo)
                except asyncio.CancelledError as err:
                    # The undo failed after a cancel came in, which ``run_to_completion`` reports
                    # as the cancel (its cause is the failure). The undos already run: go on.
                    self._on_cancel()
                    workflow.logger.warning(
                        "undo failed, tried again in %s: %s", pause, err.__cause__ or "cancelled"
                    )
                    failed.append(undo)
            if not failed:
                return
            _, cancelled = await run_to_completion(
                workflow.sleep(pause, summary="pause before retrying undos")
            )
            if cancelled:
                self._on_cancel()
            pending, pause = failed, min(pause * 2, UNDO_PAUSE_MAX)
