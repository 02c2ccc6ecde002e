"""The per-step cost table of one REST inference (issue 11): its rows, its arithmetic and its
rendering, apart from the measuring (``bench.inprocess.steps``) so that both can be checked.

Each step is measured two ways, because neither alone is honest:

- **on the path**: the request stream through ``RestApp`` with a timer around the step's call
  (the loop thread's CPU, ``thread_time_ns``), the step's nanoseconds over the requests
  served; a step that is awaited is timed in the stretches it runs, not while it waits (the
  loop then runs other work), and the run also in the batcher's flush callback, which runs a
  request it queued. This attributes time to steps precisely, but sees only the step's own
  work: work the step leaves to a background task or thread (a recorder's flush, the request
  log's thread), the loop's turns and the garbage it leaves for the collector fall in no
  step, and show as the unattributed rest.
- **on - off**: the plain stream (no timers) with every feature on, against the same stream
  with the step's feature switched off, in alternating pairs; the median of the pairs'
  differences. This sees everything the feature costs, background work included, but each
  difference is two noisy totals apart; the ``control`` pair (nothing switched off) shows how
  large a difference noise alone makes.

The **off** column is the step's time on the path with every switch off at once: what a
feature that is off still costs a request (a test of ``None`` or a manifest section).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = [
    "COLUMNS",
    "CONTROL",
    "OFF_LIMIT_US",
    "STEPS",
    "Ablation",
    "StepCost",
    "StepSpec",
    "ablation",
    "costliest_off",
    "costs_from",
    "table_rows",
    "text_table",
    "unattributed",
]


@dataclass(frozen=True)
class StepSpec:
    """One row: ``name`` (the key of its figures), what it covers, and the switch that turns
    its feature off (None: the step cannot be off; it is the request itself). ``whole``:
    whether the switch turns off all of the step (metrics' HTTP answer counter has none)."""

    name: str
    covers: str
    switch: str | None
    whole: bool = True


#: the steps of a REST inference, in the order a request meets them
STEPS: tuple[StepSpec, ...] = (
    StepSpec("auth", "abuse guard, key lookup (cached)", "MODELGATE_AUTH=off"),
    StepSpec(
        "admission",
        "refusal memo, concurrency, tenant and key GCRA, daily quota, release",
        "no admission",
    ),
    StepSpec("decode", "OIP JSON body to tensors", None),
    StepSpec("validation", "inputs against the signature and limits", None),
    StepSpec("anomaly", "the anomaly check of the inputs", "no anomaly section"),
    StepSpec("cache", "cache key and lookup", "MODELGATE_CACHE_ENABLED=false"),
    StepSpec("run", "batcher and ONNX Runtime", None),
    StepSpec("metering", "usage record (flushed in the background)", "no usage recorder"),
    StepSpec(
        "metrics",
        "per-inference Prometheus series, HTTP answer counter (no switch)",
        "no observer",
        whole=False,
    ),
    StepSpec("response", "outputs, statistics, response parameters", None),
    StepSpec("monitoring", "drift windows (folded in batches)", "no monitor listener"),
    StepSpec(
        "feedback",
        "prediction kept for feedback (written in the background)",
        "feedback.enabled false",
    ),
    StepSpec("encode", "response to OIP JSON", None),
    StepSpec("log", "request log line (written by a thread)", "MODELGATE_ACCESS_LOG=false"),
)

#: the ablation pair that switches nothing off: the differences noise alone makes
CONTROL = "control"

#: the table's columns (CPU µs per request)
COLUMNS = ["step", "covers", "on the path µs", "share", "on - off µs", "off µs", "switched off by"]

#: what a switched-off feature may still cost a request on the path (a test of ``None``)
OFF_LIMIT_US = 0.5


@dataclass(frozen=True)
class Ablation:
    """Paired differences ``on - off`` in µs per request, one per round."""

    differences: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.differences)

    @property
    def spread(self) -> float:
        """Half the range of the differences: how far one round strays."""
        return (max(self.differences) - min(self.differences)) / 2

    def within(self, noise: float) -> bool:
        """Whether the median difference is no larger than ``noise`` (µs, either sign)."""
        return abs(self.median) <= noise


def ablation(on: list[float], off: list[float]) -> Ablation:
    """The pairs ``on[i] - off[i]`` (µs per request of each round's two runs)."""
    if len(on) != len(off) or not on:
        raise ValueError(f"need as many on as off runs, at least one: {len(on)} and {len(off)}")
    return Ablation(tuple(a - b for a, b in zip(on, off, strict=True)))


@dataclass(frozen=True)
class StepCost:
    spec: StepSpec
    #: µs per request on the path, every feature on
    on_us: float
    #: µs per request on the path with its feature off (None: cannot be off)
    off_us: float | None
    #: the whole request with it on against off (None: cannot be off)
    ablation: Ablation | None


def unattributed(total_us: float, costs: list[StepCost]) -> float:
    """What no step's timer saw: the total less the steps on the path."""
    return total_us - sum(c.on_us for c in costs)


def costs_from(figures: dict[str, float]) -> tuple[list[StepCost], Ablation | None]:
    """The step costs from ``bench.inprocess steps``'s flat figures (``on: NAME``, ``off: NAME``,
    ``on - off #ROUND: NAME``), and the control pair's ablation when there is one."""

    def rounds(name: str) -> Ablation | None:
        prefix, suffix = "on - off #", f": {name}"
        values = [
            (int(key[len(prefix) : -len(suffix)]), value)
            for key, value in figures.items()
            if key.startswith(prefix) and key.endswith(suffix)
        ]
        return Ablation(tuple(v for _, v in sorted(values))) if values else None

    costs = []
    for spec in STEPS:
        if f"on: {spec.name}" not in figures:
            continue
        off = figures.get(f"off: {spec.name}") if spec.switch is not None else None
        costs.append(StepCost(spec, figures[f"on: {spec.name}"], off, rounds(spec.name)))
    return costs, rounds(CONTROL)


def costliest_off(costs: list[StepCost]) -> tuple[float, str] | None:
    """The largest cost on the path of a step whose switch turns it all off, with its name
    (None: no such step was measured off)."""
    found = [(c.off_us, c.spec.name) for c in costs if c.off_us is not None and c.spec.whole]
    return max(found) if found else None


def _us(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 0.05 else f"{value:.2f}"


def _ablation_text(found: Ablation | None, noise: float | None) -> str:
    """The median and half range; ``~0`` when the median is within the control's noise or
    its own rounds' spread: a difference that cannot be told from none."""
    if found is None:
        return "-"
    text = f"{found.median:+.1f} (±{found.spread:.1f})"
    if noise is not None and found.within(max(noise, found.spread)):
        text += " ~0"
    return text


def table_rows(
    costs: list[StepCost], total_us: float, timed_total_us: float, control: Ablation | None
) -> list[list[str]]:
    """Rows of :data:`COLUMNS`, one a step; then the unattributed rest, the total, and the
    control pair.

    ``total_us``: the plain request (no timers); ``timed_total_us``: the same with the timers,
    whose difference is the timers' own cost. An ablation no larger than the control's
    spread is marked ``~0`` (within noise)."""
    noise = max(abs(control.median), control.spread) if control is not None else None
    rows = []
    for cost in costs:
        off = "-" if cost.off_us is None else _us(cost.off_us)
        rows.append(
            [
                cost.spec.name,
                cost.spec.covers,
                _us(cost.on_us),
                f"{cost.on_us / total_us:.0%}",
                _ablation_text(cost.ablation, noise),
                off,
                cost.spec.switch or "-",
            ]
        )
    rest = unattributed(total_us, costs)
    rows.append(
        [
            "unattributed",
            "ASGI dispatch, headers, request id, routing, deadline, the listeners' record, "
            "loop turns, background flushes, GC",
            _us(rest),
            f"{rest / total_us:.0%}",
            "-",
            "-",
            "-",
        ]
    )
    rows.append(
        [
            "total",
            f"RestApp, one request at a time, no timers (with timers: {_us(timed_total_us)})",
            _us(total_us),
            "100%",
            "-",
            "-",
            "-",
        ]
    )
    if control is not None:
        rows.append(
            [
                CONTROL,
                "nothing switched off: what noise alone makes",
                "-",
                "-",
                _ablation_text(control, None),
                "-",
                "-",
            ]
        )
    return rows


def text_table(figures: dict[str, float]) -> str:
    """The table as aligned plain text, from ``bench.inprocess steps``'s figures (its
    command line prints it to stderr; ``python -m bench`` renders :func:`table_rows`)."""
    costs, control = costs_from(figures)
    rows = [COLUMNS, *table_rows(costs, figures["total"], figures["timed total"], control)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i in (0, 1, len(COLUMNS) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )
