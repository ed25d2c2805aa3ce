"""runner/benchmark/probes.py: one peak-memory sampler for a process or its whole tree, on real processes."""

import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil

from runner import metrics as M
from runner.benchmark import probes
from runner.benchmark.probes import PeakMemory

MB = 1024**2
HOLD_200MB = "import time; x = bytearray(200 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); time.sleep(1.5)"


def test_own_process_peak_sees_an_allocation_freed_before_the_end():
    with PeakMemory() as mem:
        x = bytearray(150 * MB)
        x[::4096] = b"1" * len(x[::4096])  # touch every page: resident, not only reserved
        time.sleep(0.2)
        del x
    assert mem.peak_rss - mem.start_rss > 120 * MB, (mem.start_rss, mem.peak_rss)


def test_tree_counts_the_children_a_process_only_counts_itself():
    shell = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "{HOLD_200MB}"; true'])
    try:
        with PeakMemory(shell.pid, tree=True) as tree, PeakMemory(shell.pid) as alone:
            shell.wait(timeout=60)
    finally:
        shell.kill()
    assert tree.peak_rss > 190 * MB, tree.peak_rss
    assert alone.peak_rss < 50 * MB, alone.peak_rss


def test_gpu_memory_is_none_where_it_cannot_be_measured():
    with PeakMemory(gpu=True) as mem:  # no GPU (or no process of ours on it): not measured, never 0
        time.sleep(0.05)
    assert mem.peak_vram is None


# A parent that touches 200 MB, then forks a child that keeps the same pages (copy-on-write, never written):
# both processes are resident on the same 200 MB. Each writes "ready" once the pages are in place (one write each:
# two print() calls of two processes can interleave on the pipe).
SHARE_200MB = (
    "import os, sys, time; x = bytearray(200 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); "
    "pid = os.fork(); os.write(1, b'ready\\n'); time.sleep(30)"
)


def test_tree_pss_counts_a_mapping_its_processes_share_once():
    parent = subprocess.Popen([sys.executable, "-c", SHARE_200MB], stdout=subprocess.PIPE, text=True)
    try:
        assert [parent.stdout.readline(), parent.stdout.readline()] == ["ready\n"] * 2
        child = psutil.Process(parent.pid).children()[0]
        both_rss = parent_rss = psutil.Process(parent.pid).memory_info().rss
        both_rss += child.memory_info().rss
        with PeakMemory(parent.pid, tree=True) as tree:
            time.sleep(0.3)
    finally:
        for p in psutil.Process(parent.pid).children():
            p.kill()
        parent.kill()
        parent.wait()
    assert parent_rss > 200 * MB and both_rss > 400 * MB  # RSS: the shared 200 MB in each of the two
    assert tree.pss_measured and tree.pss_rss_standins == 0
    assert 200 * MB < tree.peak_pss < both_rss - 150 * MB, (tree.peak_pss, both_rss)  # ...and once in the PSS sum
    assert tree.metrics()[M.PERF_PEAK_PSS_BYTES] == tree.peak_pss
    assert tree.metrics()[M.PERF_PEAK_RSS_BYTES] == tree.peak_rss > 400 * MB  # the RSS sum stays logged beside it


def test_unreadable_pss_falls_back_to_rss_and_is_counted(monkeypatch):
    monkeypatch.setattr(probes, "pss_bytes", lambda pid: None)  # as /proc/<pid>/smaps_rollup of another user's process
    with PeakMemory(tree=True) as mem:
        time.sleep(0.05)
    assert not mem.pss_measured and M.PERF_PEAK_PSS_BYTES not in mem.metrics()
    assert mem.metrics()[M.PERF_PEAK_RSS_BYTES] == mem.peak_rss > 0


class FakeNvml:
    """pynvml's surface that probes.py calls, answering readings the test sets: the only fake, at the NVML boundary
    (no GPU on the machines these tests run on)."""

    NVMLError = RuntimeError

    def __init__(self, pid: int, listed_pid=None):
        self.pid, self.used = pid, [[], []]  # per GPU index: MB used by our pid now
        self.listed_pid = pid if listed_pid is None else listed_pid  # the pid NVML reports (a host pid in a container)
        self.others = [0, 0]  # per GPU index: MB other processes hold (the card's used memory counts them too)

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.used)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=self.listed_pid, usedGpuMemory=mb * MB) for mb in self.used[handle]] + [
            SimpleNamespace(pid=1, usedGpuMemory=99_000 * MB)  # another process on the card: not ours
        ]

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = (sum(self.used[handle]) + self.others[handle]) * MB
        return SimpleNamespace(total=24_576 * MB, used=used, free=24_576 * MB - used)

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA GeForce RTX 3090"


def test_gpu_peaks_are_kept_per_device_as_well_as_summed(monkeypatch, tmp_path):
    nvml = FakeNvml(os.getpid())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    mem = PeakMemory(gpu=True)
    for gpu0, gpu1 in ((1000, 200), (3000, 200), (500, 2500)):  # GPU 0 peaks first, GPU 1 later
        nvml.used = [[gpu0], [gpu1]]
        mem.sample()
    assert {i: n // MB for i, n in mem.peak_vram_by_gpu.items()} == {0: 3000, 1: 2500}
    assert mem.peak_vram == 3200 * MB  # the sum's own peak (at the second reading), not 3000 + 2500
    probes.write_gpu_memory(mem.peak_vram_by_gpu, tmp_path)
    written = json.loads((tmp_path / probes.GPU_MEMORY_FILE).read_text())["peak_bytes_by_gpu"]
    assert written == {"0": 3000 * MB, "1": 2500 * MB}


def test_each_card_is_a_metric_and_the_fullest_card_too(monkeypatch):
    nvml = FakeNvml(os.getpid())
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    mem = PeakMemory(gpu=True)
    for gpu0, gpu1 in ((1000, 200), (3000, 200), (500, 2500)):
        nvml.used = [[gpu0], [gpu1]]
        mem.sample()
    metrics = mem.metrics()
    assert metrics[M.peak_vram_gpu(0)] == 3000 * MB and metrics[M.peak_vram_gpu(1)] == 2500 * MB
    assert metrics[M.PERF_PEAK_VRAM_GPU_MAX_BYTES] == 3000 * MB
    assert mem.vram_method == probes.NVML_PROCESS
    M.check_declared(metrics)  # every card's name is declared, whatever its index


def test_in_a_container_the_cards_used_memory_delta_stands_in(monkeypatch, tmp_path):
    """NVML lists host pids inside a container: none is ours, so the process match finds nothing. The card's used
    memory minus its reading before the load is measured instead, and the method says so."""
    nvml = FakeNvml(os.getpid(), listed_pid=4_000_000)
    nvml.others = [700, 0]  # already on GPU 0 before the load (another tenant): not counted
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    mem = PeakMemory(gpu=True)
    for gpu0, gpu1 in ((6000, 5000), (9000, 8000), (2000, 1000)):
        nvml.used = [[gpu0], [gpu1]]
        mem.sample()
    assert mem.vram_method == probes.NVML_DEVICE_DELTA
    assert {i: n // MB for i, n in mem.peak_vram_by_gpu.items()} == {0: 9000, 1: 8000}
    assert mem.peak_vram == 17_000 * MB
    probes.write_gpu_memory(mem.peak_vram_by_gpu, tmp_path, mem.vram_method)
    assert probes.gpu_memory_params(tmp_path)["perf.vram_method"].startswith("nvml_device_delta: ")


def test_the_delta_covers_only_the_cards_this_process_may_use(monkeypatch):
    nvml = FakeNvml(os.getpid(), listed_pid=4_000_000)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # GPU 0 belongs to another job
    mem = PeakMemory(gpu=True)
    nvml.used = [[20_000], [3000]]
    mem.sample()
    assert {i: n // MB for i, n in mem.peak_vram_by_gpu.items()} == {1: 3000}
