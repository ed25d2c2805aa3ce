"""Every metric the runner logs, declared once: name, unit, direction, display, producer.

Tracker.log_metrics refuses a name that is not declared here; the sweep summary, qrun-report's
table, plots and recommend constraints read names, headers, formats and directions from here.
Declaration order is column order in those tables. Uncertainty intervals of a metric are
`<name>_ci_low` / `<name>_ci_high` (ci_names()); they are accepted wherever the metric is.
This module must stay light: the resume path and `qrun-report` import it.

To add a metric: its constant below (NAMESPACE_NAME = "namespace/name"), its Metric(...) in a declare()
(unit, better side, display, header, producer, the tables it is a column of), and the constant -- never
the string -- wherever it is logged or read. A per-task or per-statistic family is task_metric()/member().
"""

from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

Display = Union[str, Callable[[float], str]]
DIRECTIONS = ("higher", "lower", "neither")
TABLES = ("summary", "report", "quality", "confidence")  # quality, confidence: qrun-report's distribution tables
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
# llama.cpp's and exllamav3's statistics of the per-token losses (runner/quality/distribution.py)
QUALITY_PPL_RATIO = "quality/ppl_ratio"
QUALITY_KLD_P50 = "quality/kld_p50"
QUALITY_KLD_P90 = "quality/kld_p90"
QUALITY_KLD_P99_9 = "quality/kld_p99_9"
QUALITY_KLD_MAX = "quality/kld_max"
QUALITY_DP = "quality/dp"  # a family's base: Δp, the change in the probability of the correct token
QUALITY_DP_MEAN = "quality/dp_mean"
QUALITY_DP_RMS = "quality/dp_rms"
QUALITY_DP_MIN = "quality/dp_min"
QUALITY_DP_P01 = "quality/dp_p01"
QUALITY_DP_P05 = "quality/dp_p05"
QUALITY_DP_P50 = "quality/dp_p50"
QUALITY_DP_P95 = "quality/dp_p95"
QUALITY_DP_P99 = "quality/dp_p99"
QUALITY_DP_MAX = "quality/dp_max"
QUALITY_KLD_CONF00_25 = "quality/kld_conf00_25"  # families' bases: KLD of the tokens whose baseline top-1 p is in
QUALITY_KLD_CONF25_50 = "quality/kld_conf25_50"  # [lo, hi) (exllamav3's buckets): _share, _mean, _p50
QUALITY_KLD_CONF50_75 = "quality/kld_conf50_75"
QUALITY_KLD_CONF75_95 = "quality/kld_conf75_95"
QUALITY_KLD_CONF95_100 = "quality/kld_conf95_100"
QUALITY_KLD_CONF00_25_SHARE, QUALITY_KLD_CONF00_25_MEAN, QUALITY_KLD_CONF00_25_P50 = (
    f"{QUALITY_KLD_CONF00_25}_{s}" for s in ("share", "mean", "p50")
)
QUALITY_KLD_CONF25_50_SHARE, QUALITY_KLD_CONF25_50_MEAN, QUALITY_KLD_CONF25_50_P50 = (
    f"{QUALITY_KLD_CONF25_50}_{s}" for s in ("share", "mean", "p50")
)
QUALITY_KLD_CONF50_75_SHARE, QUALITY_KLD_CONF50_75_MEAN, QUALITY_KLD_CONF50_75_P50 = (
    f"{QUALITY_KLD_CONF50_75}_{s}" for s in ("share", "mean", "p50")
)
QUALITY_KLD_CONF75_95_SHARE, QUALITY_KLD_CONF75_95_MEAN, QUALITY_KLD_CONF75_95_P50 = (
    f"{QUALITY_KLD_CONF75_95}_{s}" for s in ("share", "mean", "p50")
)
QUALITY_KLD_CONF95_100_SHARE, QUALITY_KLD_CONF95_100_MEAN, QUALITY_KLD_CONF95_100_P50 = (
    f"{QUALITY_KLD_CONF95_100}_{s}" for s in ("share", "mean", "p50")
)
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
PERF_PEAK_VRAM_GPU = "perf/peak_vram_gpu"  # a card's own peak: peak_vram_gpu(i) = perf/peak_vram_gpu_<i>_bytes
PERF_PEAK_VRAM_GPU_MAX_BYTES = "perf/peak_vram_gpu_max_bytes"
PERF_PSS_RSS_STANDINS = "perf/pss_rss_standins"
# memory/
MEMORY_NEED_BYTES = "memory/need_bytes"
MEMORY_KV_BYTES_PER_TOKEN = "memory/kv_bytes_per_token"
MEMORY_ENGINE_KV_CACHE_TOKENS = "memory/engine_kv_cache_tokens"
MEMORY_ENGINE_MAX_CONCURRENCY = "memory/engine_max_concurrency"
MEMORY_FIT_ESTIMATE_BYTES = "memory/fit_estimate_bytes"
MEMORY_FIT_ESTIMATE_OVER_MEASURED = "memory/fit_estimate_over_measured"
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


def peak_vram_gpu(index: int) -> str:
    """perf/peak_vram_gpu_<index>_bytes: one card's own peak (NVML's GPU index)."""
    return f"{PERF_PEAK_VRAM_GPU}_{int(index)}_bytes"


def _per_gpu(name: str) -> Optional[Metric]:
    """The declaration of perf/peak_vram_gpu_<i>_bytes, for any card index i."""
    head, tail = PERF_PEAK_VRAM_GPU + "_", "_bytes"
    index = name[len(head) : -len(tail)] if name.startswith(head) and name.endswith(tail) else ""
    if not index.isdigit():
        return None
    return Metric(
        name,
        "B",
        "lower",
        _mb0,
        f"GPU {index} peak MB",
        BENCHMARK,
        (),
        f"peak memory of GPU {index} alone (param perf.vram_method says how it was measured)",
    )


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
    per_gpu = _per_gpu(name)
    if per_gpu is not None:
        return per_gpu
    if len(parts) == 3 and parts[0] == "task":  # task/<any task eval.tasks names>/<stat>: one family per task
        found = [m for m in task_family(parts[1]) if m.name == name]
        if found:
            return found[0]
    for suffix in CI_SUFFIXES:
        if name.endswith(suffix) and is_declared(name[: -len(suffix)]):
            base = get(name[: -len(suffix)])
            return replace(base, name=name, better="neither", header=f"{base.header} {suffix[4:]}", tables=())
    raise ValueError(f"metric '{name}' is not declared: add it to runner/metrics.py (name, unit, direction, display)")


def check_declared(names: Iterable[str]) -> None:
    unknown = sorted(n for n in names if not is_declared(n))
    if unknown:
        raise ValueError(f"undeclared metric(s) {unknown}: declare each in runner/metrics.py before logging it")


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


SR, R, S = ("summary", "report"), ("report",), ("summary",)

declare(  # in column order
    Metric(SIZE_BYTES, "B", "lower", _mb, "size MB", QUANTIZE, SR, "bytes of the weight files"),
    Metric(
        PERF_PEAK_RSS_BYTES,
        "B",
        "lower",
        _mb0,
        "peak RSS MB",
        BENCHMARK,
        SR,
        "peak resident memory of the engine's own process (perf.memory_scope says which); "
        "the report's memory column shows peak VRAM instead where measured, and a tree's PSS",
    ),
    Metric(
        SIZE_BITS_PER_WEIGHT, "bit", "lower", "{:.2f}", "bpw", QUANTIZE, SR, "stored tensor bits / base parameter count"
    ),
    Metric(SIZE_COMPRESSION_VS_FP16, "x", "higher", "{:.2f}x", "compr", QUANTIZE, R, "fp16 bytes / artifact bytes"),
    Metric(QUALITY_PPL, "", "lower", "{:.3f}", "ppl", EVALUATE, SR, "token-level perplexity of the eval stream"),
    Metric(QUALITY_PPL_DELTA_PCT, "%", "lower", "{:+.2f}", "Δppl %", EVALUATE, SR, "perplexity change vs the baseline"),
    Metric(QUALITY_KLD_MEAN, "nats", "lower", "{:.4f}", "KLD", EVALUATE, SR, "mean KL(baseline || format) per token"),
    Metric(QUALITY_KLD_P99, "nats", "lower", "{:.3f}", "KLD p99", EVALUATE, S, "99th percentile of per-token KLD"),
    Metric(
        QUALITY_TOP1_AGREE, "share", "higher", _pct, "top-1", EVALUATE, SR, "share of tokens whose top token matches"
    ),
    Metric(PERF_PREFILL_TOK_S, "tok/s", "higher", "{:.0f}", "prefill t/s", OFFLINE, SR),
    Metric(PERF_DECODE_TOK_S, "tok/s", "higher", "{:.1f}", "decode t/s", OFFLINE, SR),
    Metric(PERF_TTFT_S_P50, "s", "lower", "{:.3f}", "TTFT s", OFFLINE, S, "single stream, median of repeats"),
    Metric(PERF_LATENCY_S_P95, "s", "lower", "{:.2f}", "p95 s", OFFLINE, SR, "single stream, over repeats"),
    *family(
        SERVING_TTFT_S,
        "s",
        "lower",
        "{:.3f}",
        "serve TTFT {} s",
        SERVING,
        tables={"p50": S},
        help="send -> first token, under load",
    ),
    *family(
        SERVING_LATENCY_S,
        "s",
        "lower",
        "{:.2f}",
        "serve {} s",
        SERVING,
        tables={"p95": SR},
        help="send -> end of stream, under load",
    ),
    Metric(
        SERVING_THROUGHPUT_TOK_S,
        "tok/s",
        "higher",
        "{:.1f}",
        "serve tok/s",
        SERVING,
        SR,
        "all users' output tokens / load duration",
    ),
    Metric(
        SERVING_SLO_ATTAINMENT, "share", "higher", _pct0, "in SLO", SERVING, R, "share of all requests within the SLO"
    ),
    Metric(
        SERVING_GOODPUT_REQ_S,
        "req/s",
        "higher",
        "{:.2f}",
        "goodput req/s",
        SERVING,
        (),
        "requests per second that succeed within the SLO (vLLM's goodput), over the load's duration",
    ),
    Metric(
        TIME_QUANTIZE_S,
        "s",
        "lower",
        "{:.1f}",
        "quant s",
        QUANTIZE,
        S,
        "the cost of making the artifact (also on a cache hit)",
    ),
)
declare(  # logged and stored, not a table column
    Metric(
        QUALITY_BASELINE_PPL, "", "lower", "{:.3f}", "base ppl", EVALUATE, (), "the baseline's ppl on the same tokens"
    ),
    Metric(
        TIME_QUANTIZE_STAGE_S,
        "s",
        "lower",
        "{:.1f}",
        "stage s",
        QUANTIZE,
        (),
        "the quantize stage's wall time (a cache hit is short)",
    ),
    Metric(TIME_EVALUATE_S, "s", "lower", "{:.1f}", "eval s", EVALUATE, (), "the evaluate stage's wall time"),
    Metric(TIME_BENCHMARK_S, "s", "lower", "{:.1f}", "bench s", BENCHMARK, (), "the benchmark stage's wall time"),
    Metric(PERF_LOAD_S, "s", "lower", "{:.2f}", "load s", OFFLINE),
    Metric(PERF_LATENCY_S_P50, "s", "lower", "{:.2f}", "p50 s", OFFLINE, (), "single stream, median of repeats"),
    Metric(
        PERF_THROUGHPUT_TOK_S,
        "tok/s",
        "higher",
        "{:.1f}",
        "stream t/s",
        OFFLINE,
        (),
        "one stream: new tokens / latency",
    ),
    Metric(PERF_RSS_INCREASE_BYTES, "B", "lower", _mb0, "RSS +MB", OFFLINE, (), "peak RSS over the worker's imports"),
    Metric(PERF_PEAK_VRAM_BYTES, "B", "lower", _mb0, "peak VRAM MB", BENCHMARK, (), "only where measured"),
    Metric(
        PERF_PEAK_VRAM_GPU_MAX_BYTES,
        "B",
        "lower",
        _mb0,
        "fullest GPU MB",
        BENCHMARK,
        (),
        "the largest of the cards' own peaks (perf/peak_vram_gpu_<i>_bytes): a sharded model fits when its fullest "
        "card does; param perf.vram_method says how it was measured",
    ),
    Metric(SERVING_REQUESTS_OK, "", "higher", "{:.0f}", "ok", SERVING),
    Metric(SERVING_REQUESTS_FAILED, "", "lower", "{:.0f}", "failed", SERVING),
    Metric(SERVING_REQUESTS_NOT_SENT, "", "lower", "{:.0f}", "not sent", SERVING),
    Metric(SERVING_REQUESTS_PER_S, "req/s", "higher", "{:.2f}", "req/s", SERVING),
    Metric(SERVING_DURATION_S, "s", "neither", "{:.1f}", "load s", SERVING, (), "first send -> last completion"),
    Metric(SERVING_OUTPUT_TOKENS, "tok", "neither", "{:.0f}", "out tok", SERVING),
    Metric(SERVING_SERVER_START_S, "s", "lower", "{:.1f}", "start s", SERVING, (), "server launch -> healthy"),
)
declare(
    *family(SERVING_TPOT_S, "s", "lower", "{:.4f}", "serve TPOT {} s", SERVING, help="(latency - TTFT) / (tokens - 1)")
)
DEQUANT_CHECK = "dequant_check"  # stage: a GGUF file's dequantized weights on torch vs llama.cpp's kernels
declare(
    Metric(
        QUALITY_KLD_MEAN_DEQUANT,
        "nats",
        "lower",
        "{:.4f}",
        "KLD deq",
        DEQUANT_CHECK,
        (),
        "mean KLD of the GGUF file's weights dequantized and run in fp32 on torch: the quantization's own cost",
    ),
    Metric(
        QUALITY_KLD_KERNEL_GAP,
        "nats",
        "neither",
        "{:+.4f}",
        "KLD kernel gap",
        DEQUANT_CHECK,
        (),
        "llama.cpp KLD - dequantized KLD on the same tokens: what llama.cpp's kernels add",
    ),
    Metric(
        QUALITY_PPL_DEQUANT,
        "",
        "lower",
        "{:.3f}",
        "ppl deq",
        DEQUANT_CHECK,
        (),
        "perplexity of the dequantized weights",
    ),
    Metric(
        QUALITY_PPL_DELTA_PCT_DEQUANT,
        "%",
        "lower",
        "{:+.2f}",
        "Δppl % deq",
        DEQUANT_CHECK,
        (),
        "perplexity change of the dequantized weights vs the baseline",
    ),
    Metric(
        QUALITY_TOP1_AGREE_DEQUANT,
        "share",
        "higher",
        _pct,
        "top-1 deq",
        DEQUANT_CHECK,
        (),
        "top-1 agreement of the dequantized weights",
    ),
    Metric(
        TIME_DEQUANT_CHECK_S,
        "s",
        "lower",
        "{:.1f}",
        "deq check s",
        DEQUANT_CHECK,
        (),
        "the dequant_check stage's wall time",
    ),
)
declare(  # spread of the offline speeds over the benchmark's repeats (the metric itself is their median)
    *[
        Metric(f"{base}_{stat}", unit, better, display, f"{header} {stat}", OFFLINE, (), f"{what} over repeats")
        for base, header in ((PERF_PREFILL_TOK_S, "prefill t/s"), (PERF_DECODE_TOK_S, "decode t/s"))
        for stat, unit, better, display, what in (
            ("min", "tok/s", "higher", "{:.1f}", "slowest repeat"),
            ("max", "tok/s", "higher", "{:.1f}", "fastest repeat"),
            ("cv", "share", "lower", _pct, "coefficient of variation (sample std / mean)"),
        )
    ],
    Metric(
        TIME_BOOTSTRAP_S,
        "s",
        "lower",
        "{:.3f}",
        "bootstrap s",
        EVALUATE,
        (),
        "the quality intervals' bootstrap (part of time/evaluate_s)",
    ),
)


def _pp(v: float) -> str:  # a probability change in percentage points, as llama.cpp prints Δp
    return f"{100 * v:+.3f}%"


def _pp_unsigned(v: float) -> str:
    return f"{100 * v:.3f}%"


# llama.cpp's `llama-perplexity --kl-divergence` statistics and exllamav3's KLD by the baseline's confidence, on the
# same tokens as quality/kld_mean (runner/quality/distribution.py); percentiles from fixed bins, within 2.33 %.
# qrun-report shows them in its "quality" and "confidence" tables; llama.cpp's "Same top p" is quality/top1_agree.
QD = ("quality",)
KLD_QUANTILES = {  # metric -> quantile of the per-token KLD
    QUALITY_KLD_P50: 0.5,
    QUALITY_KLD_P90: 0.9,
    QUALITY_KLD_P99: 0.99,
    QUALITY_KLD_P99_9: 0.999,
    QUALITY_KLD_MAX: 1.0,
}
DP_QUANTILES = {  # metric -> quantile of the per-token Δp
    QUALITY_DP_MIN: 0.0,
    QUALITY_DP_P01: 0.01,
    QUALITY_DP_P05: 0.05,
    QUALITY_DP_P50: 0.5,
    QUALITY_DP_P95: 0.95,
    QUALITY_DP_P99: 0.99,
    QUALITY_DP_MAX: 1.0,
}
CONFIDENCE_BUCKETS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 0.95), (0.95, 1.0))


def kld_by_confidence(lo: float, hi: float, stat: str) -> str:
    """quality/kld_conf<lo>_<hi>_<stat> (lo, hi: the bucket's edges of the baseline's top-1 probability)."""
    return member(f"quality/kld_conf{round(100 * lo):02d}_{round(100 * hi)}", stat)


declare(
    Metric(
        QUALITY_PPL_RATIO,
        "x",
        "lower",
        "{:.4f}",
        "PPL(Q)/PPL(base)",
        EVALUATE,
        QD,
        "ppl / the baseline's ppl on the same tokens (llama.cpp's Mean PPL(Q)/PPL(base)); interval: paired bootstrap",
    ),
    Metric(QUALITY_KLD_P50, "nats", "lower", "{:.6f}", "KLD median", EVALUATE, QD, "median of per-token KLD"),
    Metric(QUALITY_KLD_P90, "nats", "lower", "{:.5f}", "KLD p90", EVALUATE, QD, "90th percentile of per-token KLD"),
    Metric(
        QUALITY_KLD_P99_9, "nats", "lower", "{:.4f}", "KLD p99.9", EVALUATE, QD, "99.9th percentile of per-token KLD"
    ),
    Metric(QUALITY_KLD_MAX, "nats", "lower", "{:.3f}", "KLD max", EVALUATE, QD, "largest per-token KLD"),
    Metric(
        QUALITY_DP_RMS,
        "share",
        "lower",
        _pp_unsigned,
        "RMS Δp",
        EVALUATE,
        QD,
        "root mean square of Δp (llama.cpp's RMS Δp); interval: bootstrap over windows",
    ),
    *family(
        QUALITY_DP,
        "share",
        "neither",
        _pp,
        "Δp {}",
        EVALUATE,
        stats=("mean", "min", "p01", "p05", "p50", "p95", "p99", "max"),
        tables={s: QD for s in ("mean", "p01", "p50", "p99")},
        help="Δp: p(correct token) under the format - under the baseline, per token",
    ),
    *[
        Metric(
            f"quality/kld_conf{round(100 * lo):02d}_{round(100 * hi)}_{stat}",
            unit,
            "neither",
            display,
            f"p {lo:.2f}-{hi:.2f} {header}",
            EVALUATE,
            ("confidence",),
            f"tokens whose baseline top-1 probability is in [{lo}, {hi}{']' if hi == 1.0 else ')'}: {what}",
        )
        for lo, hi in CONFIDENCE_BUCKETS
        for stat, unit, display, header, what in (
            ("share", "share", _pct, "share", "their share of the scored tokens"),
            ("mean", "nats", "{:.5f}", "KLD", "their mean KLD"),
            ("p50", "nats", "{:.6f}", "KLD median", "their median KLD"),
        )
    ],
)


TASKS = "tasks"  # stage: lm-eval task accuracy (runner/tasks), one family per task eval.tasks may name
# task/<name>/<stat>, compared item by item with the eval.baseline preset's answers (runner/stats/items.py): paired
# bootstrap intervals over the items
TASK_ACC_DELTA = "acc_delta"
TASK_FLIPS = "flips"
TASK_FLIPS_C2I = "flips_c2i"
TASK_FLIPS_I2C = "flips_i2c"


def task_family(task: str) -> List[Metric]:
    """task/<name>/acc (intervals: acc +- 1.96 stderr), its stderr, the share of the baseline's accuracy kept, time,
    and the comparison with the baseline's answers on the same items: acc - baseline acc and the flips."""
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
            "acc / the eval.baseline preset's acc on the same items (interval: paired bootstrap over the items)",
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
        *_task_flips(task),
    ]


def _pct_signed(v: float) -> str:
    return f"{100 * v:+.1f}%"


def _task_flips(task: str) -> List[Metric]:
    return [
        Metric(
            task_metric(task, TASK_ACC_DELTA),
            "share",
            "higher",
            _pct_signed,
            f"{task} Δacc",
            TASKS,
            (),
            "acc - the eval.baseline preset's acc on the same items",
        ),
        Metric(
            task_metric(task, TASK_FLIPS),
            "share",
            "lower",
            _pct,
            f"{task} flips",
            TASKS,
            (),
            "share of items whose correctness differs from the eval.baseline preset's (Dutta et al., 2024)",
        ),
        Metric(
            task_metric(task, TASK_FLIPS_C2I),
            "share",
            "lower",
            _pct,
            f"{task} c→i",
            TASKS,
            (),
            "share of items the eval.baseline preset answers correctly and this format does not",
        ),
        Metric(
            task_metric(task, TASK_FLIPS_I2C),
            "share",
            "neither",  # a gain on these items, but also a departure from the baseline's answers
            _pct,
            f"{task} i→c",
            TASKS,
            (),
            "share of items the eval.baseline preset answers wrongly and this format correctly",
        ),
    ]


declare(Metric(TIME_TASKS_S, "s", "lower", "{:.1f}", "tasks s", TASKS, (), "the tasks stage's wall time"))
declare(  # failures count, and each format's capacity under the scenario's SLO (runner/benchmark/capacity.py)
    Metric(
        SERVING_FAILURE_RATE,
        "share",
        "lower",
        _pct,
        "failed",
        SERVING,
        R,
        "(failed + not sent) / requests: what a deployment's max_failure_rate bounds",
    ),
    Metric(
        SERVING_REQUESTS_TIMED_OUT,
        "",
        "lower",
        "{:.0f}",
        "timed out",
        SERVING,
        (),
        "requests given up at benchmark.request_timeout_s or at the end of the load; in the latency percentiles at "
        "that time",
    ),
    Metric(
        SERVING_QUEUE_S_P95,
        "s",
        "lower",
        "{:.3f}",
        "queue p95 s",
        SERVING,
        (),
        "poisson: scheduled arrival -> send (waiting for a free slot), included in TTFT and latency",
    ),
    Metric(
        CAPACITY_MAX_USERS,
        "users",
        "higher",
        "{:.0f}",
        "max users",
        SERVING,
        SR,
        "largest concurrency that met benchmark.slo (p95) and the failure bound",
    ),
    Metric(
        CAPACITY_BRACKETED,
        "",
        "neither",
        "{:.0f}",
        "exact",
        SERVING,
        (),
        "1: the next concurrency up was measured to miss the SLO; 0: the search stopped first (max_users is a lower "
        "bound)",
    ),
    Metric(
        CAPACITY_PROBES,
        "",
        "neither",
        "{:.0f}",
        "probes",
        SERVING,
        (),
        "loads the capacity search ran (the scenario's own included)",
    ),
    Metric(
        CAPACITY_SEARCH_S, "s", "lower", "{:.1f}", "search s", SERVING, (), "wall time of the extra capacity probes"
    ),
)
declare(  # what a deployment needs in memory (runner/benchmark/probes.py, runner/benchmark/memory_need.py)
    Metric(
        PERF_PEAK_PSS_BYTES,
        "B",
        "lower",
        _mb0,
        "peak PSS MB",
        BENCHMARK,
        (),  # the report's memory column shows it where measured
        "peak PSS summed over a process tree (a server's, or a multi-process engine's): pages its processes share "
        "counted once; RSS for the processes perf/pss_rss_standins counts",
    ),
    Metric(
        PERF_PSS_RSS_STANDINS,
        "",
        "neither",
        "{:.0f}",
        "RSS for PSS",
        BENCHMARK,
        (),
        "processes of the tree whose PSS was unreadable, counted by their RSS in perf/peak_pss_bytes (0: all PSS)",
    ),
    Metric(
        MEMORY_NEED_BYTES,
        "B",
        "lower",
        _mb0,
        "need MB",
        BENCHMARK,
        R,
        "computed: weight bytes + KV bytes per token x the benchmark's users x (prompt + output tokens); params "
        "memory.* say the shape, the KV dtype and the load",
    ),
    Metric(
        MEMORY_KV_BYTES_PER_TOKEN,
        "B",
        "lower",
        "{:.0f}",
        "KV B/token",
        BENCHMARK,
        (),
        "layers x KV heads x head dim x 2 x the KV cache's bytes per element",
    ),
    Metric(
        MEMORY_ENGINE_KV_CACHE_TOKENS,
        "tok",
        "neither",
        "{:.0f}",
        "engine KV tokens",
        BENCHMARK,
        (),
        "the KV cache the engine itself reports having allocated, in tokens (vLLM's 'KV cache size: N tokens'; "
        "ExLlamaV2's cache: offline the longest sequence asked for, served slots x context per slot)",
    ),
    Metric(
        MEMORY_ENGINE_MAX_CONCURRENCY,
        "x",
        "neither",
        "{:.2f}",
        "engine max concurrency",
        BENCHMARK,
        (),
        "how many requests of its max_model_len the engine's KV cache holds at once, as vLLM reports it ('Maximum "
        "concurrency for N tokens per request: Xx'); the param (offline) or server tag (serving) "
        "max_model_len_reported is that N",
    ),
    Metric(
        MEMORY_FIT_ESTIMATE_BYTES,
        "B",
        "lower",
        _mb0,
        "fit est. MB",
        BENCHMARK,
        (),
        "the pre-flight estimate before quantizing (runner/benchmark/fit.py): weights from the base model's "
        "config.json x the format's bits per weight + KV cache + activations + runtime, per GPU (the fullest) or "
        "for the host process on CPU; params fit.* say its parts",
    ),
    Metric(
        MEMORY_FIT_ESTIMATE_OVER_MEASURED,
        "x",
        "neither",
        "{:.2f}",
        "fit est/meas",
        BENCHMARK,
        (),
        "memory/fit_estimate_bytes / the measured peak it estimates (the fullest GPU's peak; on CPU the engine "
        "process's peak RSS, or the server tree's PSS): 1 is exact, below 1 an underestimate",
    ),
)

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

# Params the runner decides at run time (not config keys, which are logged under their own dotted names): what a
# job resolved from the model and the hardware profile, with the reason. Read back by the report and the tests.
PARAM_GROUP_SIZE = "artifact.group_size"  # the group size the artifact was quantized with (format.group_size: null)
PARAM_GROUP_SIZE_WHY = "artifact.group_size_why"  # which widths decided it, or the key that set it
PARAM_BASELINE_FORMAT = "eval.baseline_format"  # the format preset eval.baseline resolved to (eval.baseline: auto)
PARAM_BASELINE_DTYPE = "eval.baseline_dtype"  # the dtype the baseline's weights are stored and computed in
PARAM_BASELINE_PLACEMENT = "eval.baseline_placement"  # where the baseline is loaded: cpu, or GPUs with a per-card cap
PARAM_BASELINE_WHY = "eval.baseline_why"  # why that dtype: the model's own, or fp32 where it fits

_CONSTANTS = {v for k, v in list(globals().items()) if k.isupper() and isinstance(v, str) and "/" in v}
assert _CONSTANTS >= set(METRICS), f"declared without a constant: {sorted(set(METRICS) - _CONSTANTS)}"
assert not {c for c in _CONSTANTS - set(METRICS) if not any(m.startswith(c + "_") for m in METRICS)}, (
    "a constant names no declared metric (nor a family's base)"
)
