"""Peak memory of a process (optionally with its children), sampled in a thread.

One sampler for both benchmark kinds: the offline benchmark probes its own worker process, the
serving benchmark the server's whole process tree. A tree's host memory is its PSS summed over the
processes (/proc/<pid>/smaps_rollup): a page that several processes of the tree map (libtorch's code,
memory a forked child inherited) is split between them, so the sum counts it once, where summed RSS
counts it once per process and makes a multi-process engine look bigger than it is. A page shared with
a process outside the tree is split with that process too, so the PSS sum can read below what the tree
would need alone. Where a process's PSS is unreadable its RSS stands in, and perf/pss_rss_standins counts those.
GPU memory comes from NVML, per device (pynvml importable, a driver there). Where NVML lists the probed processes
on a card, their own usage counts (method "nvml_process": all they hold, CUDA context included). Inside a container
NVML reports host PIDs, so it lists none of ours: then each card's used memory minus what it used when probing
began counts instead (method "nvml_device_delta": it also counts whatever another tenant allocated meanwhile on the
cards this process may see, CUDA_VISIBLE_DEVICES). The method is logged as the param perf.vram_method. Without NVML
GPU memory stays None (not measured).
"""

import json
import os
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import psutil

from runner.metrics import (
    PERF_PEAK_PSS_BYTES,
    PERF_PEAK_RSS_BYTES,
    PERF_PEAK_VRAM_BYTES,
    PERF_PEAK_VRAM_GPU_MAX_BYTES,
    PERF_PSS_RSS_STANDINS,
    peak_vram_gpu,
)
from runner.system.gpu import visible_gpu_indices

NVML_PROCESS = "nvml_process"  # NVML's per-process usage of the probed pids
NVML_DEVICE_DELTA = "nvml_device_delta"  # each card's used memory now minus when probing began
TORCH_RESERVED = "torch_max_reserved"  # torch's own peak reserved bytes (the engine's process only)


def pss_bytes(pid: int) -> Optional[int]:
    """The PSS of one process from /proc/<pid>/smaps_rollup; None where unreadable (no such file, no permission)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMemory:
    def __init__(
        self,
        pid: Optional[int] = None,
        tree: bool = False,
        gpu: bool = False,
        interval_s: float = 0.01,
        pss: Optional[bool] = None,
    ):
        self.pid, self.tree, self.interval_s = pid or os.getpid(), tree, interval_s
        self.pss = tree if pss is None else pss  # one process: its RSS is what it needs; a tree: PSS summed
        self.start_rss = self.peak_rss = 0  # RSS summed over the processes
        self.peak_pss: Optional[int] = None  # PSS summed (RSS where unreadable); None unless self.pss
        # per method: the peak of the sum over GPUs, and GPU index -> that GPU's own peak (each at its own moment)
        self._sum_peak: Dict[str, int] = {}
        self._by_gpu: Dict[str, Dict[int, int]] = {NVML_PROCESS: {}, NVML_DEVICE_DELTA: {}}
        self._pss_unreadable: Set[int] = set()  # pids whose RSS stood in for their PSS
        self._pss_read = False
        self._nvml, self._handles = _nvml_handles() if gpu else (None, {})
        self._used_before = _device_used(self._nvml, self._handles)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def pss_measured(self) -> bool:
        """Whether peak_pss holds PSS (of at least one process; pss_rss_standins counts the rest)."""
        return self.pss and self._pss_read

    @property
    def pss_rss_standins(self) -> int:
        return len(self._pss_unreadable)

    @property
    def vram_method(self) -> Optional[str]:
        """How GPU memory was measured: the process match wherever it saw our pids, else the device delta; None:
        not measured."""
        if self._by_gpu[NVML_PROCESS]:
            return NVML_PROCESS
        return NVML_DEVICE_DELTA if self._by_gpu[NVML_DEVICE_DELTA] else None

    @property
    def peak_vram(self) -> Optional[int]:
        """Bytes over all GPUs (the sum's own peak); None where it cannot be measured."""
        method = self.vram_method
        return self._sum_peak[method] if method else None

    @property
    def peak_vram_by_gpu(self) -> Dict[int, int]:
        method = self.vram_method
        return dict(self._by_gpu[method]) if method else {}

    def metrics(self) -> Dict[str, float]:
        return memory_metrics(
            self.peak_rss,
            self.peak_pss if self.pss_measured else None,
            self.pss_rss_standins,
            self.peak_vram,
            self.peak_vram_by_gpu,
        )

    def _pids(self) -> List[psutil.Process]:
        p = psutil.Process(self.pid)
        return [p, *p.children(recursive=True)] if self.tree else [p]

    def sample(self) -> None:
        try:
            procs = self._pids()
        except psutil.Error:
            return
        rss = pss = 0
        for q in procs:
            try:
                own = q.memory_info().rss
            except psutil.Error:  # a child that just exited
                continue
            rss += own
            if self.pss:
                got = pss_bytes(q.pid)
                if got is None:
                    self._pss_unreadable.add(q.pid)
                else:
                    self._pss_read = True
                pss += own if got is None else got
        self.peak_rss = max(self.peak_rss, rss)
        if self.pss:
            self.peak_pss = max(self.peak_pss or 0, pss)
        if self._handles:
            self._add_gpu(NVML_PROCESS, _nvml_used(self._nvml, {q.pid for q in procs}, self._handles))
            now = _device_used(self._nvml, self._handles)
            delta = {i: n - self._used_before[i] for i, n in now.items() if i in self._used_before}
            self._add_gpu(NVML_DEVICE_DELTA, {i: n for i, n in delta.items() if n > 0})

    def _add_gpu(self, method: str, used: Dict[int, int]) -> None:
        if not used:
            return
        self._sum_peak[method] = max(self._sum_peak.get(method, 0), sum(used.values()))
        peaks = self._by_gpu[method]
        for index, n in used.items():
            peaks[index] = max(peaks.get(index, 0), n)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self.start_rss = self.peak_rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def memory_metrics(
    peak_rss: float,
    peak_pss: Optional[float],
    pss_rss_standins: int,
    peak_vram: Optional[float],
    peak_vram_by_gpu: Optional[Dict[int, int]] = None,
) -> Dict[str, float]:
    """perf/peak_rss_bytes, and where measured perf/peak_pss_bytes (with its RSS stand-ins), perf/peak_vram_bytes
    (NVML's GPU memory, or torch's; never host memory in its place), each card's own peak and the largest of those
    (a tensor-parallel run fits when its fullest card does, whatever the sum)."""
    out = {PERF_PEAK_RSS_BYTES: float(peak_rss)}
    if peak_pss is not None:
        out.update({PERF_PEAK_PSS_BYTES: float(peak_pss), PERF_PSS_RSS_STANDINS: float(pss_rss_standins)})
    if peak_vram:
        out[PERF_PEAK_VRAM_BYTES] = float(peak_vram)
    if peak_vram_by_gpu:
        out.update({peak_vram_gpu(i): float(n) for i, n in sorted(peak_vram_by_gpu.items())})
        out[PERF_PEAK_VRAM_GPU_MAX_BYTES] = float(max(peak_vram_by_gpu.values()))
    return out


GPU_MEMORY_FILE = "gpu_memory.json"


METHOD_WORDS = {
    NVML_PROCESS: "NVML usedGpuMemory of the probed process tree",
    NVML_DEVICE_DELTA: "NVML device memory used minus the same card's before the load (NVML listed none of the "
    "probed pids: another pid namespace, e.g. a container); counts other tenants of the card too",
    TORCH_RESERVED: "torch.cuda.max_memory_reserved of the engine's process (NVML unavailable)",
}


def write_gpu_memory(peak_by_gpu: Dict[int, int], folder: Path, method: Optional[str] = None) -> None:
    """Each GPU's own peak as folder/gpu_memory.json, where any was measured, with how it was measured: a
    tensor-parallel run's sum hides that one card may be full."""
    if not peak_by_gpu:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GPU_MEMORY_FILE).write_text(
        json.dumps(
            {
                "what": f"peak GPU memory per GPU index ({METHOD_WORDS.get(method or '', 'unknown method')}), each "
                "GPU's peak at its own moment",
                "method": method,
                "peak_bytes_by_gpu": {str(i): int(n) for i, n in sorted(peak_by_gpu.items())},
            },
            indent=2,
        )
    )


def gpu_memory_params(folder: Path) -> Dict[str, str]:
    """perf.vram_method from folder/gpu_memory.json; {} where no GPU memory was measured."""
    path = Path(folder) / GPU_MEMORY_FILE
    if not path.is_file():
        return {}
    method = json.loads(path.read_text()).get("method")
    return {"perf.vram_method": f"{method}: {METHOD_WORDS[method]}"} if method in METHOD_WORDS else {}


def _nvml_handles(nvml: Any = None) -> tuple:
    """(the NVML module, {GPU index: handle}) for the GPUs this process may use (CUDA_VISIBLE_DEVICES where it
    lists indices); (None, {}) without pynvml, a driver or a GPU: GPU memory is then not measured."""
    try:
        if nvml is None:
            import pynvml as nvml  # type: ignore[no-redef]

        nvml.nvmlInit()
        visible = visible_gpu_indices(nvml.nvmlDeviceGetCount())
        return nvml, {i: nvml.nvmlDeviceGetHandleByIndex(i) for i in visible}
    except Exception:
        return None, {}


def _device_used(nvml: Any, handles: Dict[int, Any]) -> Dict[int, int]:
    """GPU index -> the card's used memory now (every process's, as NVML sees the device)."""
    out: Dict[int, int] = {}
    for index, h in handles.items():
        try:
            out[index] = int(nvml.nvmlDeviceGetMemoryInfo(h).used)
        except Exception:  # a card that stopped answering: no reading from it
            continue
    return out


def _nvml_used(nvml: Any, pids: set, handles: Dict[int, Any]) -> Dict[int, int]:
    """GPU index -> memory used there by these pids; only the GPUs where NVML lists one of them (none: e.g. another
    pid namespace, or no process of the tree on a GPU)."""
    used: Dict[int, int] = {}
    for index, h in handles.items():
        try:
            procs = nvml.nvmlDeviceGetComputeRunningProcesses(h)
        except Exception:
            continue
        for p in procs:
            if p.pid in pids and p.usedGpuMemory is not None:
                used[index] = used.get(index, 0) + int(p.usedGpuMemory)
    return used
