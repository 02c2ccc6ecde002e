"""A node's hardware metrics: CPU and memory for real, GPUs through NVML.

There is no GPU on the machines these tests run on, so the NVML path runs against
``RecordedNvml`` below: a FAKE of the ``pynvml`` module, built from the answers the real
bindings (nvidia-ml-py 13.615.71) give on a two-GPU machine, injected at the collector's one
seam (its ``nvml`` argument). The absent path runs for real: the real ``pynvml`` on a
machine with no NVIDIA driver.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from modelgate.boot.serving import build_components
from modelgate.observability.hardware import HardwareCollector, import_nvml
from modelgate.settings import Settings
from tests.conftest import FIXTURE_MODELS


class RecordedNvml:
    """FAKE pynvml (test double): the calls the collector makes, answering what the real
    bindings answered on a machine with two GPUs (utilisation percent, bytes)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices: list[tuple[int, int, int] | None]) -> None:
        #: per GPU (utilisation %, memory used, memory total); None: NVML fails to read it
        self.devices = devices
        self.inits = 0

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        self.inits += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if self.devices[index] is None:
            raise self.NVMLError("GPU is lost")
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:  # noqa: N802
        device = self.devices[handle]
        assert device is not None
        return SimpleNamespace(gpu=device[0], memory=device[0] // 2)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        device = self.devices[handle]
        assert device is not None
        return SimpleNamespace(used=device[1], total=device[2], free=device[2] - device[1])


def scrape(collector: HardwareCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_gpus_are_reported_from_nvml() -> None:
    fake = RecordedNvml([(87, 30 * 2**30, 80 * 2**30), (3, 2**30, 80 * 2**30)])
    text = scrape(HardwareCollector(nvml=lambda: fake))  # type: ignore[arg-type,return-value]
    assert 'modelgate_gpu_utilization_percent{gpu="0"} 87.0' in text
    assert 'modelgate_gpu_utilization_percent{gpu="1"} 3.0' in text
    assert 'modelgate_gpu_memory_used_bytes{gpu="0"} 3.221225472e+10' in text
    assert 'modelgate_gpu_memory_total_bytes{gpu="1"} 8.589934592e+10' in text


def test_a_gpu_nvml_cannot_read_is_left_out_not_zeroed() -> None:
    fake = RecordedNvml([None, (40, 1, 2)])
    text = scrape(HardwareCollector(nvml=lambda: fake))  # type: ignore[arg-type,return-value]
    assert 'gpu="0"' not in text
    assert 'modelgate_gpu_utilization_percent{gpu="1"} 40.0' in text


def test_nvml_is_started_once_across_scrapes() -> None:
    fake = RecordedNvml([(1, 1, 2)])
    collector = HardwareCollector(nvml=lambda: fake)  # type: ignore[arg-type,return-value]
    for _ in range(3):
        scrape(collector)
    assert fake.inits == 1


def test_a_failed_nvml_start_means_no_gpu_series() -> None:
    class NoDriver(RecordedNvml):
        def nvmlInit(self) -> None:  # noqa: N802
            raise self.NVMLError("Driver Not Loaded")

    text = scrape(HardwareCollector(nvml=lambda: NoDriver([(1, 1, 2)])))  # type: ignore[arg-type,return-value]
    assert "modelgate_gpu_" not in text


def test_without_the_bindings_gpu_series_are_absent() -> None:
    def missing() -> Any:
        raise ImportError("No module named 'pynvml'")

    text = scrape(HardwareCollector(nvml=missing))
    assert "modelgate_gpu_" not in text
    assert "modelgate_process_cpu_seconds_total" in text


def test_the_real_nvml_reports_this_machines_gpus_or_nothing() -> None:
    # the real bindings and the real driver: with no GPU (these test machines), the
    # series are absent, not zero; on a GPU machine, each GPU has its series
    nvml = import_nvml()
    try:
        nvml.nvmlInit()
        gpus = nvml.nvmlDeviceGetCount()
    except nvml.NVMLError:
        gpus = 0
    text = scrape(HardwareCollector())
    if gpus == 0:
        assert "modelgate_gpu_" not in text
    else:
        assert f'modelgate_gpu_utilization_percent{{gpu="{gpus - 1}"}}' in text
        assert 'modelgate_gpu_memory_total_bytes{gpu="0"}' in text


def test_cpu_and_memory_are_read_from_the_process_and_proc(tmp_path: Path) -> None:
    text = scrape(HardwareCollector())
    values = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert values["modelgate_process_cpu_seconds_total"] > 0
    assert values["modelgate_process_resident_memory_bytes"] > 10 * 2**20
    assert values["modelgate_host_cpus"] >= 1
    assert (
        0 < values["modelgate_host_memory_available_bytes"] <= values["modelgate_host_memory_bytes"]
    )
    # without /proc, the memory series are absent rather than zero
    bare = scrape(HardwareCollector(proc=tmp_path))
    assert "memory_bytes" not in bare and "modelgate_host_cpus" in bare


def test_a_node_exports_them() -> None:
    node = build_components(
        Settings(role="node", model_repository=FIXTURE_MODELS, data_dir=Path(tempfile.mkdtemp()))
    )
    assert b"modelgate_process_cpu_seconds_total" in node.metrics.exposition()
