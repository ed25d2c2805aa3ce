"""Every metric the runner logs, declared once: name, unit, direction, display, producer.

Tracker.log_metrics refuses a name that is not declared here; the sweep summary, qrun-report's
table, plots and recommend constraints read names, headers, formats and directions from here.
Declaration order is column order in those tables. Uncertainty intervals of a metric are
`<name>_ci_low` / `<name>_ci_high` (ci_names()); they are accepted wherever the metric is.
This module must stay light: the resume path and `qrun-report` import it.

To add a metric: its constant below (NAMESPACE_NAME = "namespace/name"), its Metric(...) in a declare() of
runner/metrics/catalog.py (unit, better side, display, header, producer, the tables it is a column of), and the
constant -- never
the string -- wherever it is logged or read. A per-task or per-statistic family is task_metric()/member().
"""

from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

Display = Union[str, Callable[[float], str]]
DIRECTIONS = ("higher", "lower", "neither")
TABLES = ("summary", "report")
CI_SUFFIXES = ("_ci_low", "_ci_high")

# producers: the stage or benchmark kind that logs a metric
QUANTIZE, EVALUATE = "quantize", "evaluate"
OFFLINE, SERVING = "benchmark.offline", "benchmark.serving"
BENCHMARK = "benchmark"  # both kinds; perf.memory_scope (a param) says what the number covers

# Every metric name, as code reads it: `from runner.metrics import QUALITY_KLD_MEAN` (never the literal
# elsewhere). The declarations below use these; the check at the end keeps the two lists equal.
# task/<task>/<stat>: task_metric(); a family member such as serving/ttft_s_p95: member() or its constant.
# size/
SIZE_BYTES = "size/bytes"
SIZE_BITS_PER_WEIGHT = "size/bits_per_weight"
SIZE_COMPRESSION_VS_FP16 = "size/compression_vs_fp16"
# quality/
QUALITY_PPL = "quality/ppl"
QUALITY_PPL_DELTA_PCT = "quality/ppl_delta_pct"
QUALITY_KLD_MEAN = "quality/kld_mean"
QUALITY_KLD_P99 = "quality/kld_p99"
QUALITY_TOP1_AGREE = "quality/top1_agree"
QUALITY_BASELINE_PPL = "quality/baseline_ppl"
QUALITY_KLD_MEAN_DEQUANT = "quality/kld_mean_dequant"
QUALITY_KLD_KERNEL_GAP = "quality/kld_kernel_gap"
QUALITY_PPL_DEQUANT = "quality/ppl_dequant"
QUALITY_PPL_DELTA_PCT_DEQUANT = "quality/ppl_delta_pct_dequant"
QUALITY_TOP1_AGREE_DEQUANT = "quality/top1_agree_dequant"
# perf/
PERF_PEAK_RSS_BYTES = "perf/peak_rss_bytes"
PERF_PREFILL_TOK_S = "perf/prefill_tok_s"
PERF_DECODE_TOK_S = "perf/decode_tok_s"
PERF_TTFT_S_P50 = "perf/ttft_s_p50"
PERF_LATENCY_S_P95 = "perf/latency_s_p95"
PERF_LOAD_S = "perf/load_s"
PERF_LATENCY_S_P50 = "perf/latency_s_p50"
PERF_THROUGHPUT_TOK_S = "perf/throughput_tok_s"
PERF_RSS_INCREASE_BYTES = "perf/rss_increase_bytes"
PERF_PEAK_VRAM_BYTES = "perf/peak_vram_bytes"
PERF_PREFILL_TOK_S_MIN = "perf/prefill_tok_s_min"
PERF_PREFILL_TOK_S_MAX = "perf/prefill_tok_s_max"
PERF_PREFILL_TOK_S_CV = "perf/prefill_tok_s_cv"
PERF_DECODE_TOK_S_MIN = "perf/decode_tok_s_min"
PERF_DECODE_TOK_S_MAX = "perf/decode_tok_s_max"
PERF_DECODE_TOK_S_CV = "perf/decode_tok_s_cv"
PERF_PEAK_PSS_BYTES = "perf/peak_pss_bytes"
PERF_PSS_RSS_STANDINS = "perf/pss_rss_standins"
# memory/
MEMORY_NEED_BYTES = "memory/need_bytes"
MEMORY_KV_BYTES_PER_TOKEN = "memory/kv_bytes_per_token"
MEMORY_ENGINE_KV_CACHE_TOKENS = "memory/engine_kv_cache_tokens"
# serving/
SERVING_TTFT_S_P50 = "serving/ttft_s_p50"
SERVING_TTFT_S_P95 = "serving/ttft_s_p95"
SERVING_TTFT_S_P99 = "serving/ttft_s_p99"
SERVING_TTFT_S_MEAN = "serving/ttft_s_mean"
SERVING_LATENCY_S_P50 = "serving/latency_s_p50"
SERVING_LATENCY_S_P95 = "serving/latency_s_p95"
SERVING_LATENCY_S_P99 = "serving/latency_s_p99"
SERVING_LATENCY_S_MEAN = "serving/latency_s_mean"
SERVING_THROUGHPUT_TOK_S = "serving/throughput_tok_s"
SERVING_SLO_ATTAINMENT = "serving/slo_attainment"  # a share of requests (not vLLM's goodput, a rate)
SERVING_GOODPUT_REQ_S = "serving/goodput_req_s"  # vLLM's goodput: requests per second that meet the SLO
SERVING_REQUESTS_OK = "serving/requests_ok"
SERVING_REQUESTS_FAILED = "serving/requests_failed"
SERVING_REQUESTS_NOT_SENT = "serving/requests_not_sent"
SERVING_REQUESTS_PER_S = "serving/requests_per_s"
SERVING_DURATION_S = "serving/duration_s"
SERVING_OUTPUT_TOKENS = "serving/output_tokens"
SERVING_SERVER_START_S = "serving/server_start_s"
SERVING_TPOT_S_P50 = "serving/tpot_s_p50"
SERVING_TPOT_S_P95 = "serving/tpot_s_p95"
SERVING_TPOT_S_P99 = "serving/tpot_s_p99"
SERVING_TPOT_S_MEAN = "serving/tpot_s_mean"
SERVING_FAILURE_RATE = "serving/failure_rate"
SERVING_REQUESTS_TIMED_OUT = "serving/requests_timed_out"
SERVING_QUEUE_S_P95 = "serving/queue_s_p95"
SERVING_TTFT_S = "serving/ttft_s"  # a family's base: <base>_p50, _p95, ...
SERVING_LATENCY_S = "serving/latency_s"  # a family's base: <base>_p50, _p95, ...
SERVING_TPOT_S = "serving/tpot_s"  # a family's base: <base>_p50, _p95, ...
# capacity/
CAPACITY_MAX_USERS = "capacity/max_users"
CAPACITY_BRACKETED = "capacity/bracketed"
CAPACITY_PROBES = "capacity/probes"
CAPACITY_SEARCH_S = "capacity/search_s"
# time/
TIME_QUANTIZE_S = "time/quantize_s"
TIME_QUANTIZE_STAGE_S = "time/quantize_stage_s"
TIME_EVALUATE_S = "time/evaluate_s"
TIME_BENCHMARK_S = "time/benchmark_s"
TIME_DEQUANT_CHECK_S = "time/dequant_check_s"
TIME_BOOTSTRAP_S = "time/bootstrap_s"
TIME_TASKS_S = "time/tasks_s"


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    better: str  # higher | lower | neither (a count or a fact with no better side)
    display: Display  # format string for one value, or a function of it
    header: str  # short column title
    producer: str
    tables: Tuple[str, ...] = ()  # where it is a column: "summary" (qrun's sweep table), "report" (qrun-report)
    help: str = ""

    def __post_init__(self):
        assert self.better in DIRECTIONS, f"{self.name}: better={self.better!r}"
        assert set(self.tables) <= set(TABLES), f"{self.name}: tables={self.tables!r}"

    def format(self, value: Optional[float]) -> str:
        if value is None:
            return "-"
        return self.display(value) if callable(self.display) else self.display.format(value)

    def within(self, value: float, limit: float) -> bool:
        """Does value meet a limit on this metric (a maximum if lower is better, a minimum if higher)?"""
        if self.better == "neither":
            raise ValueError(f"{self.name} has no better side: it cannot be a constraint")
        return value <= limit if self.better == "lower" else value >= limit


METRICS: Dict[str, Metric] = {}


def declare(*metrics: Metric) -> None:
    for m in metrics:
        assert m.name not in METRICS, f"{m.name} declared twice"
        METRICS[m.name] = m


def family(
    base: str,
    unit: str,
    better: str,
    display: Display,
    header: str,
    producer: str,
    stats: Iterable[str] = ("p50", "p95", "p99", "mean"),
    tables: Optional[Dict[str, Tuple[str, ...]]] = None,
    help: str = "",
) -> List[Metric]:
    """One quantity summarized several ways: `<base>_p50`, `<base>_p95`, ...; header is a template ("TTFT {} s")."""
    return [
        Metric(
            f"{base}_{s}",
            unit,
            better,
            display,
            header.format(s),
            producer,
            (tables or {}).get(s, ()),
            f"{help} ({s})" if help else s,
        )
        for s in stats
    ]


def member(base: str, stat: str) -> str:
    """The declared metric <base>_<stat> of a family (SERVING_TTFT_S, "p95" -> "serving/ttft_s_p95")."""
    name = f"{base}_{stat}"
    get(name)
    return name


def task_metric(task: str, stat: str) -> str:
    """task/<task>/<stat>: one family per lm-eval task (task_family)."""
    return f"task/{task}/{stat}"


def ci_names(name: str) -> Tuple[str, str]:
    """The names of a declared metric's interval bounds."""
    get(name)
    return name + CI_SUFFIXES[0], name + CI_SUFFIXES[1]


def get(name: str) -> Metric:
    """The declaration of name (an interval bound gets its metric's unit and display); ValueError if none."""
    if name in METRICS:
        return METRICS[name]
    parts = name.split("/")
    if len(parts) == 3 and parts[0] == "task":  # task/<any task eval.tasks names>/<stat>: one family per task
        found = [m for m in task_family(parts[1]) if m.name == name]
        if found:
            return found[0]
    for suffix in CI_SUFFIXES:
        if name.endswith(suffix) and is_declared(name[: -len(suffix)]):
            base = get(name[: -len(suffix)])
            return replace(base, name=name, better="neither", header=f"{base.header} {suffix[4:]}", tables=())
    raise ValueError(f"metric '{name}' is not declared: add it to runner/metrics/ (name, unit, direction, display)")


def check_declared(names: Iterable[str]) -> None:
    unknown = sorted(n for n in names if not is_declared(n))
    if unknown:
        raise ValueError(f"undeclared metric(s) {unknown}: declare each in runner/metrics/ before logging it")


def is_declared(name: str) -> bool:
    try:
        get(name)
        return True
    except ValueError:
        return False


def in_table(table: str) -> List[Metric]:
    return [m for m in METRICS.values() if table in m.tables]


def _mb(v: float) -> str:
    return f"{v / 1e6:.1f}"


def _mb0(v: float) -> str:
    return f"{v / 1e6:.0f}"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _pct0(v: float) -> str:
    return f"{100 * v:.0f}%"


TASKS = "tasks"  # stage: lm-eval task accuracy (runner/tasks), one family per task eval.tasks may name


def task_family(task: str) -> List[Metric]:
    """task/<name>/acc (intervals: acc +- 1.96 stderr), its stderr, the share of the baseline's accuracy kept, time."""
    return [
        Metric(task_metric(task, "acc"), "share", "higher", _pct, f"{task} acc", TASKS, (), "lm-eval accuracy"),
        Metric(
            task_metric(task, "acc_stderr"), "share", "lower", _pct, f"{task} ±", TASKS, (), "lm-eval's stderr of acc"
        ),
        Metric(
            task_metric(task, "acc_retained"),
            "share",
            "higher",
            _pct,
            f"{task} kept",
            TASKS,
            (),
            "acc / the eval.baseline preset's acc on the same items",
        ),
        Metric(
            task_metric(task, "time_s"),
            "s",
            "lower",
            "{:.1f}",
            f"{task} s",
            TASKS,
            (),
            "compute time of the run that finished the task (0 on a resumed or cached one's share)",
        ),
    ]


# Which logged metric each bound of a deployment scenario or benchmark.slo is held against, per benchmark
# kind. SLOs hold at the 95th percentile; the serving percentiles include requests that timed out, at their
# timeout. The offline benchmark is one stream: its TTFT is a median over a few repeats, so a TTFT/TPOT SLO
# needs kind=serving (runner/config/deployment.py validate()).
SLO_METRIC = {
    "serving": {
        "ttft_s": SERVING_TTFT_S_P95,
        "tpot_s": SERVING_TPOT_S_P95,
        "latency_s": SERVING_LATENCY_S_P95,
        "throughput": SERVING_THROUGHPUT_TOK_S,
    },
    "offline": {"latency_s": PERF_LATENCY_S_P95, "throughput": PERF_THROUGHPUT_TOK_S},
}


# the declarations themselves (every Metric(...)), apart so that this module reads as the names and their API
from runner.metrics import catalog  # noqa: E402, F401

_CONSTANTS = {v for k, v in list(globals().items()) if k.isupper() and isinstance(v, str) and "/" in v}
assert _CONSTANTS >= set(METRICS), f"declared without a constant: {sorted(set(METRICS) - _CONSTANTS)}"
assert not {c for c in _CONSTANTS - set(METRICS) if not any(m.startswith(c + "_") for m in METRICS)}, (
    "a constant names no declared metric (nor a family's base)"
)
