"""The per-step cost table (bench/step_costs.py): the ablation's arithmetic, the figures read
back from ``python -m bench.inprocess steps``, the unattributed rest, the rows as the doc shows
them; and the switches of bench/inprocess/steps.py, which must leave the app as they found it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench.inprocess.steps import SWITCHES, _setting, switched_off
from bench.step_costs import (
    COLUMNS,
    CONTROL,
    STEPS,
    Ablation,
    StepCost,
    ablation,
    costliest_off,
    costs_from,
    table_rows,
    text_table,
    unattributed,
)

SPEC = {spec.name: spec for spec in STEPS}


def test_ablation_pairs_rounds_and_summarizes_them() -> None:
    found = ablation([10.0, 12.0, 11.0], [7.0, 10.0, 10.5])
    assert found.differences == (3.0, 2.0, 0.5)
    assert found.median == 2.0
    assert found.spread == 1.25
    assert found.within(2.0)
    assert not found.within(1.9)
    assert Ablation((-3.0,)).within(3.0)  # either sign


def test_ablation_needs_one_off_run_per_on_run() -> None:
    with pytest.raises(ValueError, match="as many"):
        ablation([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        ablation([], [])


def test_costs_are_read_back_in_step_order_with_rounds_in_number_order() -> None:
    figures = {
        "on: run": 40.0,
        "off: run": 39.0,  # a step with no switch has no off figure, whatever is sent
        "on: anomaly": 5.0,
        "off: anomaly": 0.1,
        "on - off #10: anomaly": 9.0,
        "on - off #2: anomaly": 2.0,
        "on - off #1: anomaly": 1.0,
        "on - off #1: control": 0.5,
        "on - off #2: control": -0.5,
        "total": 60.0,
    }
    costs, control = costs_from(figures)
    assert [c.spec.name for c in costs] == ["anomaly", "run"]  # the request's order
    anomaly, run = costs
    assert anomaly.on_us == 5.0
    assert anomaly.off_us == 0.1
    assert anomaly.ablation == Ablation((1.0, 2.0, 9.0))
    assert run.off_us is None
    assert run.ablation is None
    assert control == Ablation((0.5, -0.5))


def test_unattributed_is_the_total_less_the_steps_on_the_path() -> None:
    costs = [
        StepCost(SPEC["decode"], 4.0, None, None),
        StepCost(SPEC["run"], 30.0, None, None),
    ]
    assert unattributed(50.0, costs) == 16.0
    assert unattributed(30.0, costs) == -4.0  # timers that perturb more than they leave out


def test_table_rows_mark_an_ablation_that_cannot_be_told_from_none() -> None:
    control = Ablation((1.0, -1.0, 0.0))  # median 0, spread 1: noise is 1 µs
    costs = [
        StepCost(SPEC["auth"], 3.0, 0.0, Ablation((4.0, 5.0, 6.0))),
        StepCost(SPEC["metering"], 1.0, 0.0, Ablation((-5.0, 10.0, 20.0))),  # its own spread
        StepCost(SPEC["log"], 0.5, 0.0, Ablation((0.8, 0.2, 0.5))),  # the control's noise
        StepCost(SPEC["run"], 15.5, None, None),
    ]
    rows = table_rows(costs, 40.0, 47.0, control)
    assert all(len(row) == len(COLUMNS) for row in rows)
    by_step = {row[0]: row for row in rows}
    assert [row[0] for row in rows] == [
        "auth",
        "metering",
        "log",
        "run",
        "unattributed",
        "total",
        CONTROL,
    ]
    assert by_step["auth"][2:] == ["3.0", "8%", "+5.0 (±1.0)", "0.00", "MODELGATE_AUTH=off"]
    assert by_step["metering"][4] == "+10.0 (±12.5) ~0"
    assert by_step["log"][4] == "+0.5 (±0.3) ~0"
    assert by_step["run"][4:] == ["-", "-", "-"]
    assert by_step["unattributed"][2:4] == ["20.0", "50%"]
    assert by_step["total"][2] == "40.0"
    assert "47.0" in by_step["total"][1]
    assert by_step[CONTROL][4] == "+0.0 (±1.0)"


def test_table_rows_without_a_control_mark_nothing_as_noise() -> None:
    costs = [StepCost(SPEC["log"], 0.5, 0.0, Ablation((0.0,)))]
    rows = table_rows(costs, 10.0, 11.0, None)
    assert rows[0][4] == "+0.0 (±0.0)"
    assert [row[0] for row in rows] == ["log", "unattributed", "total"]


def test_the_costliest_off_step_ignores_partial_switches_and_steps_without_one() -> None:
    costs = [
        StepCost(SPEC["anomaly"], 5.0, 0.2, None),
        StepCost(SPEC["cache"], 0.3, 0.3, None),
        StepCost(SPEC["metrics"], 3.0, 2.0, None),  # its HTTP answer counter has no switch
        StepCost(SPEC["run"], 30.0, None, None),
    ]
    assert costliest_off(costs) == (0.3, "cache")
    assert costliest_off([StepCost(SPEC["run"], 30.0, None, None)]) is None


class _Slotted:
    __slots__ = ("observed", "requests", "tracer")

    def __init__(self) -> None:
        self.requests, self.observed, self.tracer = "log", True, None


class _Service:
    def __init__(self, listeners: tuple[object, ...]) -> None:
        self.listeners = listeners
        self.anomalies = "detector"

    def _screen(self) -> str:
        return "class method"


def test_switches_compose_and_are_undone() -> None:
    monitor, feedback, payloads = object(), object(), object()
    service = _Service((monitor, feedback, payloads))
    pipeline = _Slotted()
    components = SimpleNamespace(
        service=service,
        monitor=monitor,
        feedback=feedback,
        rest_app=SimpleNamespace(pipeline=pipeline),
    )
    changes = switched_off(components, ["monitoring", "feedback", "anomaly", "log"])
    changes.append((service, "_screen", lambda: "timed"))
    with _setting(changes):
        assert service.listeners == (payloads,)  # both listeners off, the third kept
        assert service.anomalies is None
        assert pipeline.requests is None
        assert pipeline.observed is False
        assert service._screen() == "timed"
    assert service.listeners == (monitor, feedback, payloads)
    assert service.anomalies == "detector"
    assert (pipeline.requests, pipeline.observed) == ("log", True)
    assert service._screen() == "class method"
    assert "_screen" not in vars(service)  # the class's method again, not a copy of it


def test_every_switchable_step_has_a_switch_and_the_control_switches_nothing() -> None:
    assert {s.name for s in STEPS if s.switch is not None} | {CONTROL} == set(SWITCHES)
    assert SWITCHES[CONTROL](SimpleNamespace()) == []


def test_the_text_table_lines_up_a_header_and_every_row() -> None:
    figures = {
        "on: decode": 4.0,
        "on: anomaly": 5.0,
        "off: anomaly": 0.1,
        "on - off #1: anomaly": 4.5,
        "on - off #1: control": 0.2,
        "total": 60.0,
        "timed total": 66.0,
    }
    lines = text_table(figures).splitlines()
    assert [line.split()[0] for line in lines] == [
        "step",
        "decode",
        "anomaly",
        "unattributed",
        "total",
        CONTROL,
    ]
    share = lines[0].index("share") + len("share")  # right-aligned under its header
    assert lines[1][share - 2 : share] == "7%"
    assert lines[2][share - 2 : share] == "8%"
