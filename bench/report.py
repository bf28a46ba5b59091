"""The figures of one invocation and the summary printed from them.

The summary leads with CPU per registration (server + worker milliseconds per unit), because it
is the figure this 2-core shared machine cannot bend much: a throughput ratio depends on what
else ran meanwhile, and one invocation's ratio ranged from 0.69 to 0.95 on this machine, while
CPU per unit is what each unit cost whoever ran beside it. The throughput ratio (the target's
figure) comes next, as the median of the pairs with its min-max spread, then the activation
latency at 1 in flight and the worker's peak RSS, then the verdicts and one row per run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bench.stack import Cpu

Kind = Literal["registration", "no-argon2id", "baseline"]
MIB = 1024 * 1024

# Targets (informational: the exit code does not depend on them).
TARGET_RATIO = 0.8
TARGET_P50_MS = 30.0
TARGET_P99_MS = 150.0
TARGET_RSS_MIB = 300.0


def percentile_ms(seconds: list[float], p: float) -> float:
    """Nearest-rank percentile in ms (no interpolation: every figure is one that happened)."""
    if not seconds:
        return math.nan
    ordered = sorted(seconds)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * 1000


@dataclass(frozen=True)
class RunFigures:
    """One run: its throughput batch with the CPU around it, and its latency batch."""

    label: str
    kind: Kind
    units: int
    """Units that succeeded in the throughput batch (warm-up excluded)."""
    wall_s: float
    cpu: Cpu
    """CPU seconds in the throughput batch's window."""
    worker_rss_bytes: int
    """The worker's peak RSS over the warm-up and the throughput batch (a fresh worker per run)."""
    activations: list[float]
    """Activation seconds at 1 in flight, the latency batch (outside the CPU window)."""
    failures: list[str]
    """Units that failed, or whose workflow did not end in its happy end state, in either batch."""

    @property
    def per_s(self) -> float:
        return self.units / self.wall_s if self.wall_s else math.nan

    def ms_per_unit(self, seconds: float) -> float:
        return seconds / self.units * 1000 if self.units else math.nan

    @property
    def cpu_ms(self) -> float:
        """Server + worker CPU per unit: the primary figure."""
        return self.ms_per_unit(self.cpu.server + self.cpu.worker)


def _pooled_cpu(runs: list[RunFigures]) -> tuple[float, float]:
    """Server and worker ms per unit over all ``runs``: their CPU seconds over their units."""
    units = sum(r.units for r in runs) or math.nan
    return (
        sum(r.cpu.server for r in runs) / units * 1000,
        sum(r.cpu.worker for r in runs) / units * 1000,
    )


@dataclass
class Report:
    runs: list[RunFigures]
    """In the order they ran."""
    setup: list[str] = field(default_factory=list)
    """What was run, on what, at which commit: printed at the end."""

    def of_kind(self, kind: Kind) -> list[RunFigures]:
        return [r for r in self.runs if r.kind == kind]

    @property
    def pairs(self) -> list[tuple[RunFigures, RunFigures]]:
        """(baseline, no-argon2id) pairs, in the order run."""
        return list(zip(self.of_kind("baseline"), self.of_kind("no-argon2id"), strict=True))

    def ratios(self) -> list[float]:
        """Per pair: registrations/s without Argon2id over the baseline's units/s."""
        return [run.per_s / base.per_s for base, run in self.pairs]

    def cpu_ratios(self) -> list[float]:
        """Per pair: baseline CPU per unit over the registration's without Argon2id."""
        return [base.cpu_ms / run.cpu_ms for base, run in self.pairs]

    def activations(self, *kinds: Kind) -> list[float]:
        return [s for kind in kinds for r in self.of_kind(kind) for s in r.activations]

    def text(self) -> str:
        lines = ["CPU per registration, ms per unit at load (server + worker = total):"]
        rows: list[tuple[Kind, str]] = [
            ("no-argon2id", "registration without Argon2id"),
            ("baseline", "baseline"),
            ("registration", "registration with Argon2id"),
        ]
        for kind, name in rows:
            runs = self.of_kind(kind)
            server, worker = _pooled_cpu(runs)
            totals = [r.cpu_ms for r in runs]
            spread = f"{len(runs)} runs: {min(totals):.1f} to {max(totals):.1f}"
            lines.append(
                f"  {name:30} {server:5.1f} + {worker:5.1f} = {server + worker:5.1f}"
                f"   ({spread if len(runs) > 1 else 'one run'})"
            )
        cpu_ratios = self.cpu_ratios()
        lines.append(
            f"  baseline / without Argon2id: {statistics.median(cpu_ratios):.2f}"
            f" (per pair {_listed(cpu_ratios)}; the throughput ratio if the cores were saturated)"
        )
        ratios = self.ratios()
        lines.append(
            f"throughput ratio without Argon2id (registrations/s over baseline units/s):"
            f" median {statistics.median(ratios):.2f}, min-max {min(ratios):.2f} to"
            f" {max(ratios):.2f} over {_count(len(ratios), 'pair')} (per pair {_listed(ratios)})"
        )
        latency = self.activations("registration", "no-argon2id")
        p50, p99 = percentile_ms(latency, 50), percentile_ms(latency, 99)
        floor = self.activations("baseline")
        lines.append(
            f"activation latency at 1 in flight, {len(latency)} registrations: p50 {p50:.1f} ms,"
            f" p99 {p99:.1f} ms (baseline: p50 {percentile_ms(floor, 50):.1f},"
            f" p99 {percentile_ms(floor, 99):.1f})"
        )
        rss = max(r.worker_rss_bytes for r in self.runs if r.kind != "baseline") / MIB
        base_rss = max(r.worker_rss_bytes for r in self.of_kind("baseline")) / MIB
        lines.append(f"worker peak RSS: {rss:.0f} MiB (baseline {base_rss:.0f} MiB)")

        lines += ["", "targets (informational; a ratio swings by up to 0.25 between invocations):"]
        lines += [
            _verdict(
                f"throughput without Argon2id >= {TARGET_RATIO}x baseline (median)",
                f"{statistics.median(ratios):.2f}x",
                statistics.median(ratios) >= TARGET_RATIO,
            ),
            _verdict(
                f"activation p50 < {TARGET_P50_MS:.0f} ms", f"{p50:.1f} ms", p50 < TARGET_P50_MS
            ),
            _verdict(
                f"activation p99 < {TARGET_P99_MS:.0f} ms", f"{p99:.1f} ms", p99 < TARGET_P99_MS
            ),
            _verdict(
                f"worker peak RSS < {TARGET_RSS_MIB:.0f} MiB",
                f"{rss:.0f} MiB",
                rss < TARGET_RSS_MIB,
            ),
        ]

        lines += ["", "runs, in order (CPU in ms per unit at load; latency at 1 in flight):"]
        header = ("run", "units/s", "server", "worker", "loadgen", "p50 ms", "p99 ms", "RSS MiB")
        lines.append(f"  {header[0]:16}" + "".join(f"{h:>9}" for h in header[1:]) + "  other CPU")
        for r in self.runs:
            cells = (
                f"{r.per_s:.1f}",
                f"{r.ms_per_unit(r.cpu.server):.1f}",
                f"{r.ms_per_unit(r.cpu.worker):.1f}",
                f"{r.ms_per_unit(r.cpu.load_generator):.1f}",
                f"{percentile_ms(r.activations, 50):.1f}",
                f"{percentile_ms(r.activations, 99):.1f}",
                f"{r.worker_rss_bytes / MIB:.0f}",
            )
            others = r.cpu.others / r.wall_s if r.wall_s else math.nan
            lines.append(
                f"  {r.label:16}" + "".join(f"{c:>9}" for c in cells) + f"  {others:.2f} cores"
            )
        for r in self.runs:
            if r.failures:
                lines.append(f"{r.label}: {len(r.failures)} failed, first: {r.failures[:3]}")
        return "\n".join([*lines, "", *self.setup])


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _listed(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _verdict(name: str, value: str, met: bool) -> str:
    return f"  [{'PASS' if met else 'MISS'}] {name}: {value}"
