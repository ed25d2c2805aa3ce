"""Peak memory of a process (optionally with its children), sampled in a thread.

One sampler for both benchmark kinds: the offline benchmark probes its own worker process, the
serving benchmark the server's whole process tree. A tree's host memory is its PSS summed over the
processes (/proc/<pid>/smaps_rollup): a page that several processes of the tree map (libtorch's code,
memory a forked child inherited) is split between them, so the sum counts it once, where summed RSS
counts it once per process and makes a multi-process engine look bigger than it is. A page shared with
a process outside the tree is split with that process too, so the PSS sum can read below what the tree
would need alone. Where a process's PSS is unreadable its RSS stands in, and perf/pss_rss_standins counts those.
GPU memory comes from NVML's per-process accounting when pynvml is importable and sees the process
(per GPU index and summed); otherwise it stays None (not measured).
"""

import json
import os
import threading
from pathlib import Path
from typing import Dict, List, Optional, Set

import psutil

from runner.metrics import PERF_PEAK_PSS_BYTES, PERF_PEAK_RSS_BYTES, PERF_PEAK_VRAM_BYTES, PERF_PSS_RSS_STANDINS


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
        self.peak_vram: Optional[int] = None  # bytes over all GPUs; None where it cannot be measured
        self.peak_vram_by_gpu: Dict[int, int] = {}  # GPU index -> that GPU's own peak (each at its own moment)
        self._pss_unreadable: Set[int] = set()  # pids whose RSS stood in for their PSS
        self._pss_read = False
        self._nvml = _nvml_handles() if gpu else []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def pss_measured(self) -> bool:
        """Whether peak_pss holds PSS (of at least one process; pss_rss_standins counts the rest)."""
        return self.pss and self._pss_read

    @property
    def pss_rss_standins(self) -> int:
        return len(self._pss_unreadable)

    def metrics(self) -> Dict[str, float]:
        return memory_metrics(
            self.peak_rss,
            self.peak_pss if self.pss_measured else None,
            self.pss_rss_standins,
            self.peak_vram,
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
        if self._nvml:
            self._add_gpu(_nvml_used({q.pid for q in procs}, self._nvml))

    def _add_gpu(self, used: Dict[int, int]) -> None:
        if not used:
            return
        self.peak_vram = max(self.peak_vram or 0, sum(used.values()))
        for index, n in used.items():
            self.peak_vram_by_gpu[index] = max(self.peak_vram_by_gpu.get(index, 0), n)

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
    peak_rss: float, peak_pss: Optional[float], pss_rss_standins: int, peak_vram: Optional[float]
) -> Dict[str, float]:
    """perf/peak_rss_bytes, and where measured perf/peak_pss_bytes (with its RSS stand-ins) and perf/peak_vram_bytes
    (NVML's per-process GPU memory, or torch's; never host memory in its place)."""
    out = {PERF_PEAK_RSS_BYTES: float(peak_rss)}
    if peak_pss is not None:
        out.update({PERF_PEAK_PSS_BYTES: float(peak_pss), PERF_PSS_RSS_STANDINS: float(pss_rss_standins)})
    if peak_vram:
        out[PERF_PEAK_VRAM_BYTES] = float(peak_vram)
    return out


GPU_MEMORY_FILE = "gpu_memory.json"


def write_gpu_memory(peak_by_gpu: Dict[int, int], folder: Path) -> None:
    """Each GPU's own peak (NVML, the probed processes only) as folder/gpu_memory.json, where any was measured:
    a tensor-parallel run's sum hides that one card may be full."""
    if not peak_by_gpu:
        return
    folder.mkdir(parents=True, exist_ok=True)
    (folder / GPU_MEMORY_FILE).write_text(
        json.dumps(
            {
                "what": "peak GPU memory per GPU index of the probed process tree (NVML usedGpuMemory), each GPU's "
                "peak at its own moment",
                "peak_bytes_by_gpu": {str(i): int(n) for i, n in sorted(peak_by_gpu.items())},
            },
            indent=2,
        )
    )


def _nvml_handles() -> list:
    """One handle per GPU, in NVML's index order (handle i is GPU i)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no pynvml, no driver, no GPU: GPU memory is then not measured
        return []


def _nvml_used(pids: set, handles: list) -> Dict[int, int]:
    """GPU index -> memory used there by these pids; only the GPUs where NVML lists one of them (none: e.g. another
    pid namespace, or no process of the tree on a GPU)."""
    import pynvml

    used: Dict[int, int] = {}
    for index, h in enumerate(handles):
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        except pynvml.NVMLError:
            continue
        for p in procs:
            if p.pid in pids and p.usedGpuMemory is not None:
                used[index] = used.get(index, 0) + int(p.usedGpuMemory)
    return used
