"""What a node's hardware is doing, read when ``/metrics`` is scraped (no cost per request):
the signals the Helm chart's autoscalers read (docs/kubernetes.md).

- ``process_cpu_seconds_total``: CPU time of the server process (user + system)
- ``process_resident_memory_bytes``: its resident memory (Linux, from ``/proc``)
- ``host_cpus``: CPUs the process may run on; ``host_memory_bytes``,
  ``host_memory_available_bytes``: the machine's memory (Linux, from ``/proc/meminfo``)
- ``gpu_utilization_percent{gpu}``: the share of the last sample period a kernel ran, as
  NVML reports it; ``gpu_memory_used_bytes{gpu}``, ``gpu_memory_total_bytes{gpu}``

All prefixed ``modelgate_``. Where something cannot be read (no NVML library, no driver, no
GPU, no ``/proc``), its series are **absent**, never zero: a zero utilisation would tell an
autoscaler that an idle GPU exists. NVML (``pynvml``, from ``nvidia-ml-py``) is imported and
initialised at the first scrape only, and a failure to do either is remembered, so a
machine without a GPU pays for the attempt once.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["HardwareCollector", "import_nvml"]

log = logging.getLogger("modelgate.hardware")


def import_nvml() -> ModuleType:
    """The NVML bindings; ImportError when ``nvidia-ml-py`` is not installed."""
    return importlib.import_module("pynvml")


class HardwareCollector:
    """A prometheus-client collector of the process's, the machine's and its GPUs' use.

    ``nvml`` returns the ``pynvml`` module (the seam the tests use to hand it a recorded
    fake); ``proc`` is where ``/proc`` is."""

    def __init__(
        self, *, nvml: Callable[[], ModuleType] = import_nvml, proc: Path = Path("/proc")
    ) -> None:
        self._load_nvml = nvml
        self._proc = proc
        self._nvml: Any = None
        self._nvml_tried = False

    def collect(self) -> Iterator[Metric]:
        times = os.times()
        yield CounterMetricFamily(
            "modelgate_process_cpu_seconds",
            "CPU time of the server process, user and system",
            times.user + times.system,
        )
        rss = self._resident_bytes()
        if rss is not None:
            yield GaugeMetricFamily(
                "modelgate_process_resident_memory_bytes", "Resident memory of the process", rss
            )
        yield GaugeMetricFamily(
            "modelgate_host_cpus", "CPUs the process may run on", len(os.sched_getaffinity(0))
        )
        memory = self._meminfo()
        if "MemTotal" in memory:
            yield GaugeMetricFamily(
                "modelgate_host_memory_bytes", "Memory of the machine", memory["MemTotal"]
            )
        if "MemAvailable" in memory:
            yield GaugeMetricFamily(
                "modelgate_host_memory_available_bytes",
                "Memory the machine can give without swapping",
                memory["MemAvailable"],
            )
        yield from self._gpus()

    # -- the process and the machine ---------------------------------------------------
    def _resident_bytes(self) -> int | None:
        try:
            fields = (self._proc / "self" / "statm").read_text().split()
            return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return None

    def _meminfo(self) -> dict[str, int]:
        found: dict[str, int] = {}
        try:
            text = (self._proc / "meminfo").read_text()
        except OSError:
            return found
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                found[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
        return found

    # -- GPUs through NVML -------------------------------------------------------------
    def _nvml_module(self) -> Any:
        if not self._nvml_tried:
            self._nvml_tried = True
            try:
                nvml = self._load_nvml()
            except ImportError:
                log.info("no NVML bindings (nvidia-ml-py): GPU metrics are absent")
                return None
            try:
                nvml.nvmlInit()
            except nvml.NVMLError as exc:  # no driver, no library: no GPU to report
                log.info("NVML did not start (%s): GPU metrics are absent", exc)
                return None
            self._nvml = nvml
        return self._nvml

    def _gpus(self) -> Iterator[Metric]:
        nvml = self._nvml_module()
        if nvml is None:
            return
        labels = ("gpu",)
        utilization = GaugeMetricFamily(
            "modelgate_gpu_utilization_percent",
            "Share of the last sample period a kernel ran on the GPU (NVML)",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "modelgate_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels
        )
        total = GaugeMetricFamily(
            "modelgate_gpu_memory_total_bytes", "GPU memory (NVML)", labels=labels
        )
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            log.warning("NVML could not count GPUs: %s", exc)
            return
        for index in range(count):
            # a device NVML cannot read now (lost, resetting) is left out of this scrape
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError as exc:
                log.warning("NVML could not read GPU %d: %s", index, exc)
                continue
            label = [str(index)]
            utilization.add_metric(label, rates.gpu)
            used.add_metric(label, memory.used)
            total.add_metric(label, memory.total)
        if utilization.samples:
            yield utilization
            yield used
            yield total
