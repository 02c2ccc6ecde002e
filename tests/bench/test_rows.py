"""The pure parts of issue 11's added benchmark rows: which key and which Redis each row runs
with, the odd row's body and the flag it must earn, and how RSS is read and judged."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from bench import workloads
from bench.inprocess.anomaly import ANOMALY_ROWS
from bench.suites import DEFAULT_REDIS_URL, SUITES, Ctx, suite_context
from bench.suites.credit_load import credit_body
from bench.suites.memory import growth_mib, holds_steady, tree_rss_mib, vm_rss_kib
from bench.suites.odd_rows import ODD, TYPICAL, flagged


def _ctx(redis_url: str | None = None) -> Ctx:
    return Ctx(
        models=Path("models"),
        duration=1.0,
        rounds=1,
        work=Path("work"),
        console=Console(),
        redis_url=redis_url,
        redis_prefix="modelgate-bench-0123456789ab:",
    )


@pytest.mark.parametrize("name", ["ood", "redis", "gateway", "rss"])
def test_the_added_rows_are_selectable_and_carry_a_tenant_key_by_default(name: str) -> None:
    assert name in SUITES
    assert suite_context(_ctx(), name, None).auth == "tenant"
    assert suite_context(_ctx(), name, "admin").auth == "admin"  # --auth still decides


def test_the_earlier_rows_keep_the_bootstrap_key_by_default() -> None:
    for name in ("raw", "rest", "grpc", "minilm", "workers"):
        assert suite_context(_ctx(), name, None).auth == "admin"
        assert suite_context(_ctx(), name, "tenant").auth == "tenant"


def test_only_the_rows_that_need_redis_get_one_and_redis_names_it() -> None:
    assert suite_context(_ctx(), "redis", None).redis_url == DEFAULT_REDIS_URL
    assert suite_context(_ctx(), "gateway", None).redis_url == DEFAULT_REDIS_URL
    assert suite_context(_ctx(), "rest", None).redis_url is None
    assert suite_context(_ctx(), "ood", None).redis_url is None
    chosen = "redis://10.0.0.5:6380/3"
    for name in ("redis", "gateway", "rest"):
        assert suite_context(_ctx(chosen), name, None).redis_url == chosen
    # every row of a run shares its one prefix, which the run removes at the end
    assert suite_context(_ctx(), "gateway", None).redis_prefix == _ctx().redis_prefix


def test_the_typical_body_is_the_one_every_other_row_sends() -> None:
    assert credit_body(ANOMALY_ROWS[TYPICAL]) == workloads.credit_json()
    odd = orjson.loads(credit_body(ANOMALY_ROWS[ODD]))["inputs"][0]
    assert odd["shape"] == [1, 12] and odd["data"][0][1] == 9e9


def test_only_an_answer_the_anomaly_check_flagged_counts_as_flagged() -> None:
    assert flagged({"parameters": {"anomaly_score": 1.0, "anomalous": True}})
    assert not flagged({"parameters": {"anomaly_score": 0.0}})
    assert not flagged({"outputs": []})
    assert not flagged({"parameters": {"anomalous": "true"}})


def test_vm_rss_is_read_from_proc_status() -> None:
    status = "Name:\tpython\nVmPeak:\t  900000 kB\nVmRSS:\t  345678 kB\nRssAnon:\t 1 kB\n"
    assert vm_rss_kib(status) == 345678
    assert vm_rss_kib("Name:\tzombie\nState:\tZ (zombie)\n") == 0
    own = vm_rss_kib(Path("/proc/self/status").read_text())
    assert own > 1024  # this Python holds more than a MiB
    assert tree_rss_mib(os.getpid()) >= own / 1024 * 0.9


def test_growth_counts_from_the_first_runs_end() -> None:
    assert growth_mib([350.0, 351.0, 352.5]) == pytest.approx(2.5)
    assert holds_steady([350.0, 352.0, 353.0])  # 3 MiB is within 1% of 350
    assert not holds_steady([350.0, 358.0, 366.0])
    assert holds_steady([90.0, 91.0, 92.0])  # 2 MiB: the floor for a small server
    assert not holds_steady([90.0, 91.5, 92.5])
    assert holds_steady([400.0, 398.0, 396.0])  # shrinking is no growth
