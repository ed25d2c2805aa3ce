"""What a run measured, read the way the decision reads it: memory (and which kind), the latency and throughput
of the load it is judged under, the failure rate, and the words a number is shown with.

`c` is a runner.report.recommend.Constraints: with a deployment scenario, latency and throughput come from the
scenario's kind of load; without one, from the run's own benchmark (serving where measured, else single stream).
"""

from typing import Optional, Tuple

from runner import metrics as M
from runner.report.data import Row

GIB = 1024**3


def on_gpu(row: Row) -> bool:
    device = row.params.get("hardware.device")
    return str(device).startswith("cuda") if device else row.get(M.PERF_PEAK_VRAM_BYTES) is not None


def memory(row: Row) -> Optional[float]:
    return measured_memory(row)[0]


def measured_memory(row: Row) -> Tuple[Optional[float], str]:
    """(bytes, what they are): peak VRAM on a GPU run; else peak PSS (a process tree's shared pages once), peak RSS,
    or the file size, the first logged."""
    if on_gpu(row):
        return row.get(M.PERF_PEAK_VRAM_BYTES) or None, "peak VRAM"
    for name, what in (
        (M.PERF_PEAK_PSS_BYTES, "peak PSS"),
        (M.PERF_PEAK_RSS_BYTES, "peak RSS"),
        (M.SIZE_BYTES, "file size"),
    ):
        if row.get(name):
            return row.get(name), what
    return None, "not measured"


def memory_violation(row: Row, limit: Optional[float]) -> Optional[str]:
    """The memory bound, held against the larger of the measured peak (memory()) and the computed need (weights +
    KV cache at the benchmark's users x context, memory/need_bytes), saying which it was. A computed need within
    the bound does not stand in for a peak that was not measured."""
    if limit is None:
        return None
    (measured, what), computed = measured_memory(row), row.get(M.MEMORY_NEED_BYTES)
    if computed is not None and computed > limit and (measured is None or computed >= measured):
        seen = f"; {what} {measured / GIB:.2f} GiB" if measured is not None else ""
        return f"needs {computed / GIB:.2f} GiB > {limit / GIB:.2f} GiB (computed: weights + KV cache{seen})"
    if measured is None:
        return "memory not measured"
    if measured > limit:
        seen = f"; computed need {computed / GIB:.2f} GiB" if computed is not None else ""
        return f"needs {measured / GIB:.2f} GiB > {limit / GIB:.2f} GiB ({what}{seen})"
    return None


def _served_or(row: Row, serving: str, offline: str) -> str:
    """The serving benchmark's metric where this run measured it, else the offline one."""
    return serving if row.get(serving) is not None else offline


def throughput_metric(row: Row, c=None) -> str:
    if c is not None and c.scenario is not None:
        return M.SLO_METRIC[c.scenario.kind]["throughput"]
    return _served_or(row, M.SERVING_THROUGHPUT_TOK_S, M.PERF_DECODE_TOK_S)


def latency_metric(row: Row, c=None) -> str:
    if c is not None and c.scenario is not None:
        return M.SLO_METRIC[c.scenario.kind]["latency_s"]
    return _served_or(row, M.SERVING_LATENCY_S_P95, M.PERF_LATENCY_S_P95)


def throughput(row: Row, c=None) -> Optional[float]:
    return row.get(throughput_metric(row, c))


def latency_p95(row: Row, c=None) -> Optional[float]:
    return row.get(latency_metric(row, c))


FEW_REPEATS = 20  # a p95 over fewer repeats is (close to) their maximum


def p95_words(row: Row, name: str) -> str:
    """'p95', or for the offline single stream over few repeats what that p95 really is."""
    if name != M.PERF_LATENCY_S_P95:
        return "p95"
    try:
        n = int(float(row.params.get("benchmark.repeats", "")))
    except ValueError:
        return "p95"
    return f"p95 of only {n} repeats (about their max)" if n < FEW_REPEATS else "p95"


def failure_rate(row: Row) -> Optional[float]:
    """(failed + not sent) / requests of a serving run (older runs: from the counts); None for other runs."""
    if row.get(M.SERVING_FAILURE_RATE) is not None:
        return row.get(M.SERVING_FAILURE_RATE)
    counts = [row.get(n) for n in (M.SERVING_REQUESTS_OK, M.SERVING_REQUESTS_FAILED, M.SERVING_REQUESTS_NOT_SENT)]
    if any(v is None for v in counts) or not sum(counts):
        return None
    return (counts[1] + counts[2]) / sum(counts)


def fmt(name: str, value: float) -> str:
    return M.get(name).format(value)


def pct(v: float) -> str:
    return f"{100 * v:.1f} %"
