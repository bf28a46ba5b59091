"""Figures of a benchmark invocation: computed once, printed as text and, on request, as JSON.

Argon2id is deliberately slow, so raw registrations/s says little about what Temporal and the rest
of the code cost. Two figures take it out (see ``Report``): a measured one, from a run whose worker
replaces the hash by a constant, and an estimate computed from the registration run's own CPU
accounting. Compared with the baseline they show what the registration's own work (everything but
Argon2id) costs over bare orchestration. The CPU per unit is compared the same way: measured
against the no-Argon2id run when there is one, else estimated (and labelled so).

Latency is reported twice. At ``--concurrency`` units in flight it is mostly queueing (Little's
law: units in flight = throughput x latency), so it describes the load, not the code; the latency
targets describe one customer on an otherwise idle service and are judged on a second batch
driven one unit at a time (``RunFigures.unloaded``). An ``[info]`` line after the verdicts gives
the loaded figure, so a PASS cannot be read as the latency under load.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.load import Batch
from bench.procstat import CpuSnapshot

MIB = 1024 * 1024
LABEL_WIDTH = 42
"""Width of the report's first column: its longest row names (the rows at 1 in flight)."""

# Targets (informational: the exit code does not depend on them).
TARGET_RATIO_TO_BASELINE = 0.8
TARGET_ACTIVATION_P50_MS = 30.0
TARGET_ACTIVATION_P99_MS = 150.0
TARGET_WORKER_RSS_MIB = 300.0


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure is a latency that happened)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Percentiles:
    """p50/p95/p99 in milliseconds."""

    p50: float
    p95: float
    p99: float

    @classmethod
    def of(cls, seconds: list[float]) -> Percentiles:
        if not seconds:
            return cls(math.nan, math.nan, math.nan)
        ms = [s * 1000 for s in seconds]
        return cls(percentile(ms, 50), percentile(ms, 95), percentile(ms, 99))

    def text(self) -> str:
        return f"{self.p50:6.1f} {self.p95:6.1f} {self.p99:6.1f}"


@dataclass(frozen=True)
class BatchFigures:
    """One batch of units: how many went through and how long each phase took."""

    count: int
    succeeded: int
    finished: int
    """Workflows that completed in the happy end state (checked after the batch)."""
    failures: list[str]
    wall_s: float
    start_ms: Percentiles
    code_wait_ms: Percentiles
    activation_ms: Percentiles
    end_to_end_ms: Percentiles

    @classmethod
    def of(cls, count: int, batch: Batch, finished: int) -> BatchFigures:
        samples = batch.samples
        return cls(
            count=count,
            succeeded=len(samples),
            finished=finished,
            failures=batch.failures,
            wall_s=batch.wall,
            start_ms=Percentiles.of([s.start for s in samples]),
            code_wait_ms=Percentiles.of([s.code_wait for s in samples]),
            activation_ms=Percentiles.of([s.activation for s in samples]),
            end_to_end_ms=Percentiles.of([s.total for s in samples]),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "succeeded": self.succeeded,
            "finished": self.finished,
            "failures": self.failures[:10],
            "failure_count": len(self.failures),
            "wall_s": self.wall_s,
            "start_ms": vars(self.start_ms),
            "code_wait_ms": vars(self.code_wait_ms),
            "activation_ms": vars(self.activation_ms),
            "end_to_end_ms": vars(self.end_to_end_ms),
        }


@dataclass(frozen=True)
class RunFigures(BatchFigures):
    """One run: its throughput batch (warm-up excluded), the CPU and memory around it, and its
    latency batch."""

    kind: str
    """``baseline``, ``registration`` or ``no-argon2id`` (the registration, hash stubbed)."""
    cpu_s: CpuSnapshot
    cores: int
    worker_peak_rss_bytes: int
    load_generator_peak_rss_bytes: int | None
    """Over the warm-up and the throughput batch, like the worker's; ``None`` where the process's
    peak could not be reset before the run (``procstat.reset_self_peak_rss``): the peak would
    then include every earlier run and the Argon2id calibration."""
    unloaded: BatchFigures | None
    """The latency batch: units driven one at a time after the throughput batch, by the same
    (warm) worker, outside the CPU window. Nothing queues, so each latency is the unit's own path
    through client, server and worker. ``None`` with ``--latency-count 0``."""

    @property
    def per_s(self) -> float:
        return self.succeeded / self.wall_s if self.wall_s else math.nan

    def cpu_ms_per_unit(self) -> dict[str, float]:
        n = max(1, self.succeeded)
        cpu = self.cpu_s
        return {
            "server": cpu.server / n * 1000,
            "worker": cpu.worker / n * 1000,
            "load_generator": cpu.load_generator / n * 1000,
            "total": cpu.ours / n * 1000,
        }

    def cores_used(self) -> dict[str, float]:
        """Average number of cores each party kept busy: shows which one is the bottleneck."""
        wall = self.wall_s or math.nan
        cpu = self.cpu_s
        return {
            "server": cpu.server / wall,
            "worker": cpu.worker / wall,
            "load_generator": cpu.load_generator / wall,
            "other_processes": cpu.others / wall,
        }

    @property
    def machine_busy(self) -> float:
        """Share of all cores busy with anything (ours and other programs) in the window."""
        return self.cpu_s.machine / (self.wall_s * self.cores) if self.wall_s else math.nan

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **super().as_json(),
            "per_s": self.per_s,
            "cpu_s": {
                "server": self.cpu_s.server,
                "worker": self.cpu_s.worker,
                "load_generator": self.cpu_s.load_generator,
                "other_processes": self.cpu_s.others,
            },
            "cpu_ms_per_unit": self.cpu_ms_per_unit(),
            "cores_used": self.cores_used(),
            "machine_busy": self.machine_busy,
            "worker_peak_rss_mib": self.worker_peak_rss_bytes / MIB,
            "load_generator_peak_rss_mib": (
                None
                if self.load_generator_peak_rss_bytes is None
                else self.load_generator_peak_rss_bytes / MIB
            ),
            "unloaded": None if self.unloaded is None else self.unloaded.as_json(),
        }


@dataclass(frozen=True)
class HashFigures:
    """Argon2id cost measured directly: the provider's own hash function, one thread, idle."""

    hashes: int
    wall_ms: float
    cpu_ms: float
    parameters: str


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    met: bool | None
    """``None`` when it cannot be judged (e.g. no baseline run)."""

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a "}[self.met]


@dataclass
class Report:
    machine: dict[str, Any]
    config: dict[str, Any]
    argon2id: HashFigures
    registration: RunFigures
    baseline: RunFigures | None
    no_argon2id: RunFigures | None
    """The registration with the worker's Argon2id replaced by a constant (``--skip-no-hash``)."""
    more_pairs: list[tuple[RunFigures, RunFigures]] = field(default_factory=list)
    """``--pairs``: further (baseline, no-argon2id) runs after the first three. One pair's ratio
    varies by a few percent from one invocation to the next, as much as the distance to the
    target; with more pairs the targets are judged on medians."""
    notes: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[RunFigures]:
        """The runs of the main table (the first pair and the registration)."""
        return [r for r in (self.registration, self.no_argon2id, self.baseline) if r is not None]

    @property
    def pairs(self) -> list[tuple[RunFigures, RunFigures]]:
        """Every (baseline, no-argon2id) pair, the main table's first."""
        if self.baseline is None or self.no_argon2id is None:
            return []
        return [(self.baseline, self.no_argon2id), *self.more_pairs]

    @property
    def hash_cpu_s(self) -> float:
        """``H = N * h``: the registration run's hashing, at the calibrated CPU time per hash."""
        return self.registration.succeeded * self.argon2id.cpu_ms / 1000

    @property
    def estimated_excluding_hashing_per_s(self) -> float | None:
        """Registrations/s had hashing cost nothing, if the run were CPU-bound: ``N / (T(1-H/U))``.

        ``N`` registrations took ``T`` seconds of wall time and ``U`` CPU seconds in total
        (server + worker + load generator), ``H = N * h`` of them hashing. If wall time were
        proportional to the CPU work (cores saturated), the run without Argon2id would take
        ``T * (1 - H / U)``. Equivalently ``N / (T - H / P)`` with ``P = U / T`` the cores used
        on average: unlike subtracting ``H`` outright, it credits that Argon2id (which releases
        the GIL) ran in parallel with other work. An upper bound when the bottleneck is not the
        cores but the worker's one Python thread, which hashing does not occupy: the measured
        run (``no_argon2id``) then shows a smaller gain.
        """
        run = self.registration
        used = run.cpu_s.ours
        if not run.succeeded or used <= self.hash_cpu_s:
            return None
        return run.succeeded / (run.wall_s * (1 - self.hash_cpu_s / used))

    @property
    def excluding_hashing_per_s(self) -> float | None:
        """Measured if the no-Argon2id run was made, else the estimate."""
        if self.no_argon2id is not None:
            return self.no_argon2id.per_s
        return self.estimated_excluding_hashing_per_s

    @property
    def ratio_to_baseline(self) -> float | None:
        """The first pair's ratio or, with ``--pairs``, the median of all pairs' ratios."""
        if self.more_pairs:
            return statistics.median(_ratio(baseline, run) for baseline, run in self.pairs)
        excluding = self.excluding_hashing_per_s
        if self.baseline is None or excluding is None or not self.baseline.per_s:
            return None
        return excluding / self.baseline.per_s

    @property
    def cpu_ratio_to_baseline(self) -> float | None:
        """Baseline CPU per unit over registration CPU per unit without hashing: the throughput
        ratio on saturated cores, independent of what else ran on the machine.

        Measured when the no-Argon2id run was made: its total CPU per unit (server + worker +
        load generator) against the baseline's, the median over the pairs with ``--pairs``. Only
        without it, estimated: the registration run's total less the calibrated hash. That
        undercounts hashing, since a hash on a loaded worker costs more CPU than the idle
        single-thread calibration (~26 against ~20 ms measured), so the estimate is low.
        """
        if self.pairs:
            return statistics.median(_cpu_ratio(baseline, run) for baseline, run in self.pairs)
        if self.baseline is None or not self.registration.succeeded:
            return None
        registration = self.registration.cpu_ms_per_unit()["total"] - self.argon2id.cpu_ms
        return self.baseline.cpu_ms_per_unit()["total"] / registration

    @property
    def excluding_hashing_source(self) -> str:
        """Where the figures without hashing come from: the no-Argon2id run(s) or the estimate."""
        if self.no_argon2id is None:
            return "estimated"
        return f"measured, median of {len(self.pairs)} pairs" if self.more_pairs else "measured"

    def registration_latency(self) -> tuple[Percentiles, str]:
        """The activation latency the targets are judged on: the registration run's or, with
        ``--pairs``, the medians of p50, p95 and p99 over every registration run, with and
        without Argon2id (the activation's path is the same: the hash is paid at the start)."""
        return self._over_registration_runs(self.latency_figures)

    def loaded_registration_latency(self) -> tuple[Percentiles, str]:
        """The same runs' activation latency in the throughput batch, at ``--concurrency`` in
        flight: printed next to the targets so their 1-in-flight verdict is not read as it."""
        where = f"{self.config['concurrency']} in flight"
        return self._over_registration_runs(lambda run: (run.activation_ms, where))

    def _over_registration_runs(
        self, figures_of: Callable[[RunFigures], tuple[Percentiles, str]]
    ) -> tuple[Percentiles, str]:
        if not self.more_pairs:
            return figures_of(self.registration)
        runs = [self.registration, *(run for _, run in self.pairs)]
        figures = [figures_of(run) for run in runs]
        return (
            Percentiles(
                statistics.median(p.p50 for p, _ in figures),
                statistics.median(p.p95 for p, _ in figures),
                statistics.median(p.p99 for p, _ in figures),
            ),
            f"{figures[0][1]}, median of {len(runs)} runs",
        )

    def latency_figures(self, run: RunFigures) -> tuple[Percentiles, str]:
        """The activation latency the targets are judged on, and at how many in flight.

        The unloaded batch's when it was run: the targets describe one customer on an idle
        service, and at ``--concurrency`` in flight the figure is mostly queueing. Without it
        (``--latency-count 0``) the loaded figure is all there is, and the name says so.
        """
        if run.unloaded is not None:
            return run.unloaded.activation_ms, "1 in flight"
        return run.activation_ms, f"{self.config['concurrency']} in flight"

    @property
    def baseline_activation_floor(self) -> tuple[float, str] | None:
        """The baseline's activation p50 under the same conditions as the targets' figure.

        Informational: the baseline has the registration's orchestration shape with no-op
        activities, so its latency is about the least the registration's could be.
        """
        if self.baseline is None:
            return None
        latency, where = self.latency_figures(self.baseline)
        if self.more_pairs:
            p50s = [self.latency_figures(baseline)[0].p50 for baseline, _ in self.pairs]
            return statistics.median(p50s), f"{where}, median of {len(p50s)} runs"
        return latency.p50, where

    def targets(self) -> list[Target]:
        run = self.registration
        ratio = self.ratio_to_baseline
        rss = max(r.worker_peak_rss_bytes for r in (run, *(h for _, h in self.pairs))) / MIB
        source = self.excluding_hashing_source
        activation, where = self.registration_latency()
        return [
            Target(
                f"throughput excluding hashing >= {TARGET_RATIO_TO_BASELINE}x baseline ({source})",
                "n/a" if ratio is None else f"{ratio:.2f}x",
                None if ratio is None else ratio >= TARGET_RATIO_TO_BASELINE,
            ),
            Target(
                f"activation p50 < {TARGET_ACTIVATION_P50_MS:.0f} ms ({where})",
                f"{activation.p50:.1f} ms",
                activation.p50 < TARGET_ACTIVATION_P50_MS,
            ),
            Target(
                f"activation p99 < {TARGET_ACTIVATION_P99_MS:.0f} ms ({where})",
                f"{activation.p99:.1f} ms",
                activation.p99 < TARGET_ACTIVATION_P99_MS,
            ),
            Target(
                f"worker peak RSS < {TARGET_WORKER_RSS_MIB:.0f} MiB",
                f"{rss:.0f} MiB",
                rss < TARGET_WORKER_RSS_MIB,
            ),
        ]

    def as_json(self) -> dict[str, Any]:
        floor = self.baseline_activation_floor
        return {
            "machine": self.machine,
            "config": self.config,
            "argon2id": vars(self.argon2id),
            "runs": {run.kind: run.as_json() for run in self.runs},
            "derived": {
                "hash_cpu_s": self.hash_cpu_s,
                "registrations_per_s_excluding_hashing": self.excluding_hashing_per_s,
                "excluding_hashing_source": self.excluding_hashing_source,
                "estimated_excluding_hashing_per_s": self.estimated_excluding_hashing_per_s,
                "estimate_formula": "N / (T * (1 - N * h / U))",
                "ratio_to_baseline": self.ratio_to_baseline,
                "cpu_ratio_to_baseline": self.cpu_ratio_to_baseline,
                "activation_ms_at_concurrency": vars(self.loaded_registration_latency()[0]),
                "baseline_activation_p50_ms": None if floor is None else floor[0],
                "baseline_activation_p50_in_flight": None if floor is None else floor[1],
            },
            "pairs": [
                {
                    "baseline": baseline.as_json(),
                    "no_argon2id": run.as_json(),
                    "ratio": _ratio(baseline, run),
                }
                for baseline, run in self.more_pairs
            ],
            "targets": [{"name": t.name, "value": t.value, "met": t.met} for t in self.targets()],
            "notes": self.notes,
        }

    def text(self) -> str:
        runs = self.runs
        m, c = self.machine, self.config
        latency_count = c["latency_count"]
        latency_batch = (
            f", then {latency_count} more at 1 in flight for latency" if latency_count else ""
        )
        lines = [
            f"{c['count']} units per run end to end, concurrency {c['concurrency']}{latency_batch};"
            f" {c['warmup']} warm-up units per run not counted; payload encryption on;"
            " worker in its own process",
            f"machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']:.1f} GiB,"
            f" Python {m['python']}, temporalio {m['temporalio']}, {m['temporal_cli']}",
            f"code: {m['code']}; load average before: {m['load_average_before'][0]:.2f},"
            f" after: {m['load_average_after'][0]:.2f}; runs in order: {c['order']}",
            "",
            f"{'':{LABEL_WIDTH}}" + "".join(f"{run.kind:>22}" for run in runs),
        ]

        def row(label: str, cells: list[str]) -> None:
            lines.append(f"{label:{LABEL_WIDTH}}" + "".join(f"{cell:>22}" for cell in cells))

        def triple(values: dict[str, float], digits: int) -> str:
            return " ".join(f"{v:5.{digits}f}" for v in list(values.values())[:3])

        row("registrations/s (end to end)", [f"{r.per_s:.1f}" for r in runs])
        row("succeeded / finished / failed", [
            f"{r.succeeded} / {r.finished} / {len(r.failures)}" for r in runs
        ])  # fmt: skip
        row("wall time s", [f"{r.wall_s:.2f}" for r in runs])
        row("start latency ms p50 p95 p99", [r.start_ms.text() for r in runs])
        row("code arrives ms p50 p95 p99", [r.code_wait_ms.text() for r in runs])
        row("activation latency ms p50 p95 p99", [r.activation_ms.text() for r in runs])
        row("end to end ms p50 p95 p99", [r.end_to_end_ms.text() for r in runs])
        row("CPU s: Temporal server", [f"{r.cpu_s.server:.2f}" for r in runs])
        row("CPU s: worker process", [f"{r.cpu_s.worker:.2f}" for r in runs])
        row("CPU s: load generator (this process)", [f"{r.cpu_s.load_generator:.2f}" for r in runs])
        row("CPU s: other processes (noise)", [f"{r.cpu_s.others:.2f}" for r in runs])
        row("CPU ms/unit: server worker loadgen", [triple(r.cpu_ms_per_unit(), 1) for r in runs])
        row("cores used: server worker loadgen", [triple(r.cores_used(), 2) for r in runs])
        row("machine busy (all processes)", [f"{r.machine_busy:.0%}" for r in runs])
        row("worker peak RSS MiB", [f"{r.worker_peak_rss_bytes / MIB:.0f}" for r in runs])
        row("load generator peak RSS MiB", [
            "n/a" if r.load_generator_peak_rss_bytes is None
            else f"{r.load_generator_peak_rss_bytes / MIB:.0f}"
            for r in runs
        ])  # fmt: skip
        # After the throughput window's rows: none of the CPU or memory figures above include it.
        if any(r.unloaded is not None for r in runs):

            def at_one(cell: Callable[[BatchFigures], str]) -> list[str]:
                return ["n/a" if r.unloaded is None else cell(r.unloaded) for r in runs]

            row(
                "succeeded / finished / failed, 1 in flight",
                at_one(lambda u: f"{u.succeeded} / {u.finished} / {len(u.failures)}"),
            )
            row("start ms at 1 in flight p50 p95 p99", at_one(lambda u: u.start_ms.text()))
            row(
                "code arrives ms at 1 in flight p50 p95 p99",
                at_one(lambda u: u.code_wait_ms.text()),
            )
            row(
                "activation ms at 1 in flight p50 p95 p99",
                at_one(lambda u: u.activation_ms.text()),
            )
            row(
                "end to end ms at 1 in flight p50 p95 p99",
                at_one(lambda u: u.end_to_end_ms.text()),
            )
        a, run = self.argon2id, self.registration
        lines += [
            "",
            f"Argon2id ({a.parameters}): {a.wall_ms:.1f} ms wall, {a.cpu_ms:.1f} ms CPU per hash"
            f" ({a.hashes} hashes, one thread, before the runs); one hash per registration",
        ]
        if self.no_argon2id is not None:
            lines.append(
                f"registrations/s excluding hashing, measured: {self.no_argon2id.per_s:.1f}"
                " (run 'no-argon2id': the worker's hash function returns a constant)"
            )
        estimate = self.estimated_excluding_hashing_per_s
        if estimate is not None:
            lines.append(
                f"registrations/s excluding hashing, estimated if CPU-bound: {estimate:.1f}"
                f" = N / (T * (1 - N*h / U)) = {run.succeeded} / ({run.wall_s:.2f} s * (1 -"
                f" {self.hash_cpu_s:.2f} s / {run.cpu_s.ours:.2f} s));"
                " U = CPU s of server + worker + load generator"
            )
        ratio, cpu_ratio = self.ratio_to_baseline, self.cpu_ratio_to_baseline
        if ratio is not None and not self.more_pairs:  # else: the pairs' lines below
            lines.append(f"ratio to baseline (excluding hashing): {ratio:.2f}")
        if cpu_ratio is not None:
            compared = (
                "registration less one idle hash (estimated: a hash under load costs more)"
                if self.no_argon2id is None
                else f"no-argon2id ({self.excluding_hashing_source})"
            )
            lines.append(
                f"CPU per unit, baseline / {compared}: {cpu_ratio:.2f}"
                " (the throughput ratio on saturated cores)"
            )
        if self.more_pairs:
            lines += ["", "pairs, in the order run (each run on a fresh server):"]
            for number, (baseline, run) in enumerate(self.pairs, start=1):
                base_p50 = self.latency_figures(baseline)[0].p50
                run_p50 = self.latency_figures(run)[0].p50
                base_cpu = baseline.cpu_ms_per_unit()["worker"]
                run_cpu = run.cpu_ms_per_unit()["worker"]
                lines.append(
                    f"  {number}: baseline {baseline.per_s:.1f}/s, no-argon2id {run.per_s:.1f}/s,"
                    f" ratio {_ratio(baseline, run):.2f}; worker CPU ms/unit"
                    f" {base_cpu:.1f} / {run_cpu:.1f};"
                    f" activation p50 {base_p50:.1f} / {run_p50:.1f} ms"
                )
            ratios = [_ratio(baseline, run) for baseline, run in self.pairs]
            lines.append(
                f"ratio to baseline, median of {len(ratios)} pairs: {statistics.median(ratios):.2f}"
                f" (range {min(ratios):.2f} to {max(ratios):.2f})"
            )
        lines += ["", "targets (informational):"]
        lines += [f"  [{t.verdict}] {t.name}: {t.value}" for t in self.targets()]
        registration = self.registration
        if registration.unloaded is not None and registration.per_s:  # else: the targets' figure
            loaded, where = self.loaded_registration_latency()
            concurrency = c["concurrency"]
            lines.append(
                f"  [info] activation p50 / p99 ({where}, the throughput batch):"
                f" {loaded.p50:.1f} / {loaded.p99:.1f} ms (not judged: mostly queueing; by"
                f" Little's law, {concurrency} in flight at the registration run's"
                f" {registration.per_s:.1f}/s is {concurrency / registration.per_s:.2f} s per"
                " unit end to end, whatever the code)"
            )
        floor = self.baseline_activation_floor
        if floor is not None:
            lines.append(
                f"  [info] baseline activation p50 ({floor[1]}): {floor[0]:.1f} ms"
                " (not a target: the floor of the orchestration shape, no-op activities)"
            )
        for failed in (r for r in runs if r.failures):
            lines.append(f"{failed.kind}: first failures:")
            lines += [f"  {failure}" for failure in failed.failures[:5]]
        for r in runs:
            if r.unloaded is not None and r.unloaded.failures:
                lines.append(f"{r.kind}: first failures at 1 in flight:")
                lines += [f"  {failure}" for failure in r.unloaded.failures[:5]]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _ratio(baseline: RunFigures, run: RunFigures) -> float:
    """Measured registrations/s without Argon2id over the baseline's units/s."""
    return run.per_s / baseline.per_s if baseline.per_s else math.nan


def _cpu_ratio(baseline: RunFigures, run: RunFigures) -> float:
    """The baseline's total CPU per unit over the no-Argon2id registration's."""
    registration = run.cpu_ms_per_unit()["total"]
    return baseline.cpu_ms_per_unit()["total"] / registration if registration else math.nan
