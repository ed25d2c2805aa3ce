"""runner/benchmark/probes.py: one peak-memory sampler for a process or its whole tree, on real processes."""

import subprocess
import sys
import time

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
