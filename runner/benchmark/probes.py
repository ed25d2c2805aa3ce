"""Peak memory of a process (optionally with its children), sampled in a thread.

One sampler for both benchmark kinds: the offline benchmark probes its own worker process, the
serving benchmark the server's whole process tree. GPU memory comes from NVML's per-process
accounting when pynvml is importable and sees the process; otherwise it stays None (not measured).
"""

import os
import threading
from typing import List, Optional

import psutil


class PeakMemory:
    def __init__(self, pid: Optional[int] = None, tree: bool = False, gpu: bool = False, interval_s: float = 0.01):
        self.pid, self.tree, self.interval_s = pid or os.getpid(), tree, interval_s
        self.start_rss = self.peak_rss = 0
        self.peak_vram: Optional[int] = None  # bytes; None where it cannot be measured
        self._nvml = _nvml_handles() if gpu else []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> List[psutil.Process]:
        p = psutil.Process(self.pid)
        return [p, *p.children(recursive=True)] if self.tree else [p]

    def sample(self) -> None:
        try:
            procs = self._pids()
            rss = 0
            for q in procs:
                try:
                    rss += q.memory_info().rss
                except psutil.Error:  # a child that just exited
                    pass
        except psutil.Error:
            return
        self.peak_rss = max(self.peak_rss, rss)
        if self._nvml:
            vram = _nvml_used({q.pid for q in procs}, self._nvml)
            if vram is not None:
                self.peak_vram = max(self.peak_vram or 0, vram)

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


def _nvml_handles() -> list:
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # no pynvml, no driver, no GPU: GPU memory is then not measured
        return []


def _nvml_used(pids: set, handles: list) -> Optional[int]:
    """GPU memory used by these pids over all GPUs; None when NVML lists none of them (e.g. another pid namespace)."""
    import pynvml

    total, seen = 0, False
    for h in handles:
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        except pynvml.NVMLError:
            continue
        for p in procs:
            if p.pid in pids and p.usedGpuMemory is not None:
                total, seen = total + int(p.usedGpuMemory), True
    return total if seen else None
