"""Every metric the runner logs, declared once: name, unit, direction, display, producer.

Tracker.log_metrics refuses a name that is not declared here; the sweep summary, qrun-report's
table, plots and recommend constraints read names, headers, formats and directions from here.
Declaration order is column order in those tables. Uncertainty intervals of a metric are
`<name>_ci_low` / `<name>_ci_high` (ci_names()); they are accepted wherever the metric is.
This module must stay light: the resume path and `qrun-report` import it.
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


def family(base: str, unit: str, better: str, display: Display, header: str, producer: str,
           stats: Iterable[str] = ("p50", "p95", "p99", "mean"), tables: Optional[Dict[str, Tuple[str, ...]]] = None,
           help: str = "") -> List[Metric]:
    """One quantity summarized several ways: `<base>_p50`, `<base>_p95`, ...; header is a template ("TTFT {} s")."""
    return [Metric(f"{base}_{s}", unit, better, display, header.format(s), producer, (tables or {}).get(s, ()),
                   f"{help} ({s})" if help else s) for s in stats]


def ci_names(name: str) -> Tuple[str, str]:
    """The names of a declared metric's interval bounds."""
    get(name)
    return tuple(name + s for s in CI_SUFFIXES)


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
    Metric("size/bytes", "B", "lower", _mb, "size MB", QUANTIZE, SR, "bytes of the weight files"),
    Metric("perf/peak_rss_bytes", "B", "lower", _mb0, "peak RSS MB", BENCHMARK, SR,
           "peak resident memory of the engine's own process (perf.memory_scope says which); "
           "the report's memory column shows peak VRAM instead where measured"),
    Metric("size/bits_per_weight", "bit", "lower", "{:.2f}", "bpw", QUANTIZE, SR, "stored tensor bits / base parameter count"),
    Metric("size/compression_vs_fp16", "x", "higher", "{:.2f}x", "compr", QUANTIZE, R, "fp16 bytes / artifact bytes"),
    Metric("quality/ppl", "", "lower", "{:.3f}", "ppl", EVALUATE, SR, "token-level perplexity of the eval stream"),
    Metric("quality/ppl_delta_pct", "%", "lower", "{:+.2f}", "Δppl %", EVALUATE, SR, "perplexity change vs the baseline"),
    Metric("quality/kld_mean", "nats", "lower", "{:.4f}", "KLD", EVALUATE, SR, "mean KL(baseline || format) per token"),
    Metric("quality/kld_p99", "nats", "lower", "{:.3f}", "KLD p99", EVALUATE, S, "99th percentile of per-token KLD"),
    Metric("quality/top1_agree", "share", "higher", _pct, "top-1", EVALUATE, SR, "share of tokens whose top token matches"),
    Metric("perf/prefill_tok_s", "tok/s", "higher", "{:.0f}", "prefill t/s", OFFLINE, SR),
    Metric("perf/decode_tok_s", "tok/s", "higher", "{:.1f}", "decode t/s", OFFLINE, SR),
    Metric("perf/ttft_s_p50", "s", "lower", "{:.3f}", "TTFT s", OFFLINE, S, "single stream, median of repeats"),
    Metric("perf/latency_s_p95", "s", "lower", "{:.2f}", "p95 s", OFFLINE, SR, "single stream, over repeats"),
    *family("serving/ttft_s", "s", "lower", "{:.3f}", "serve TTFT {} s", SERVING, tables={"p50": S},
            help="send -> first token, under load"),
    *family("serving/latency_s", "s", "lower", "{:.2f}", "serve {} s", SERVING, tables={"p95": SR},
            help="send -> end of stream, under load"),
    Metric("serving/throughput_tok_s", "tok/s", "higher", "{:.1f}", "serve tok/s", SERVING, SR,
           "all users' output tokens / load duration"),
    Metric("serving/goodput", "share", "higher", _pct0, "goodput", SERVING, R, "share of all requests within the SLO"),
    Metric("time/quantize_s", "s", "lower", "{:.1f}", "quant s", QUANTIZE, S, "the cost of making the artifact (also on a cache hit)"),
)
declare(  # logged and stored, not a table column
    Metric("quality/baseline_ppl", "", "lower", "{:.3f}", "base ppl", EVALUATE, (), "the baseline's ppl on the same tokens"),
    Metric("time/quantize_stage_s", "s", "lower", "{:.1f}", "stage s", QUANTIZE, (), "the quantize stage's wall time (a cache hit is short)"),
    Metric("time/evaluate_s", "s", "lower", "{:.1f}", "eval s", EVALUATE, (), "the evaluate stage's wall time"),
    Metric("time/benchmark_s", "s", "lower", "{:.1f}", "bench s", BENCHMARK, (), "the benchmark stage's wall time"),
    Metric("perf/load_s", "s", "lower", "{:.2f}", "load s", OFFLINE),
    Metric("perf/latency_s_p50", "s", "lower", "{:.2f}", "p50 s", OFFLINE, (), "single stream, median of repeats"),
    Metric("perf/throughput_tok_s", "tok/s", "higher", "{:.1f}", "stream t/s", OFFLINE, (), "one stream: new tokens / latency"),
    Metric("perf/rss_increase_bytes", "B", "lower", _mb0, "RSS +MB", OFFLINE, (), "peak RSS over the worker's imports"),
    Metric("perf/peak_vram_bytes", "B", "lower", _mb0, "peak VRAM MB", BENCHMARK, (), "only where measured"),
    Metric("serving/requests_ok", "", "higher", "{:.0f}", "ok", SERVING),
    Metric("serving/requests_failed", "", "lower", "{:.0f}", "failed", SERVING),
    Metric("serving/requests_not_sent", "", "lower", "{:.0f}", "not sent", SERVING),
    Metric("serving/requests_per_s", "req/s", "higher", "{:.2f}", "req/s", SERVING),
    Metric("serving/duration_s", "s", "neither", "{:.1f}", "load s", SERVING, (), "first send -> last completion"),
    Metric("serving/output_tokens", "tok", "neither", "{:.0f}", "out tok", SERVING),
    Metric("serving/server_start_s", "s", "lower", "{:.1f}", "start s", SERVING, (), "server launch -> healthy"),
)
declare(*family("serving/tpot_s", "s", "lower", "{:.4f}", "serve TPOT {} s", SERVING, help="(latency - TTFT) / (tokens - 1)"))
DEQUANT_CHECK = "dequant_check"  # stage: a GGUF file's dequantized weights on torch vs llama.cpp's kernels
declare(
    Metric("quality/kld_mean_dequant", "nats", "lower", "{:.4f}", "KLD deq", DEQUANT_CHECK, (),
           "mean KLD of the GGUF file's weights dequantized and run in fp32 on torch: the quantization's own cost"),
    Metric("quality/kld_kernel_gap", "nats", "neither", "{:+.4f}", "KLD kernel gap", DEQUANT_CHECK, (),
           "llama.cpp KLD - dequantized KLD on the same tokens: what llama.cpp's kernels add"),
    Metric("quality/ppl_dequant", "", "lower", "{:.3f}", "ppl deq", DEQUANT_CHECK, (), "perplexity of the dequantized weights"),
    Metric("quality/ppl_delta_pct_dequant", "%", "lower", "{:+.2f}", "Δppl % deq", DEQUANT_CHECK, (),
           "perplexity change of the dequantized weights vs the baseline"),
    Metric("quality/top1_agree_dequant", "share", "higher", _pct, "top-1 deq", DEQUANT_CHECK, (),
           "top-1 agreement of the dequantized weights"),
    Metric("time/dequant_check_s", "s", "lower", "{:.1f}", "deq check s", DEQUANT_CHECK, (), "the dequant_check stage's wall time"),
)
declare(  # issue 12: spread of the offline speeds over the benchmark's repeats (the metric itself is their median)
    *[Metric(f"{base}_{stat}", unit, better, display, f"{header} {stat}", OFFLINE, (), f"{what} over repeats")
      for base, header in (("perf/prefill_tok_s", "prefill t/s"), ("perf/decode_tok_s", "decode t/s"))
      for stat, unit, better, display, what in (("min", "tok/s", "higher", "{:.1f}", "slowest repeat"),
                                                ("max", "tok/s", "higher", "{:.1f}", "fastest repeat"),
                                                ("cv", "share", "lower", _pct, "coefficient of variation (sample std / mean)"))],
    Metric("time/bootstrap_s", "s", "lower", "{:.3f}", "bootstrap s", EVALUATE, (),
           "the quality intervals' bootstrap (part of time/evaluate_s)"),
)
TASKS = "tasks"  # stage: lm-eval task accuracy (runner/tasks), one family per task eval.tasks may name


def task_family(task: str) -> List[Metric]:
    """task/<name>/acc (intervals: acc +- 1.96 stderr), its stderr, the share of the baseline's accuracy kept, time."""
    return [Metric(f"task/{task}/acc", "share", "higher", _pct, f"{task} acc", TASKS, (), "lm-eval accuracy"),
            Metric(f"task/{task}/acc_stderr", "share", "lower", _pct, f"{task} ±", TASKS, (), "lm-eval's stderr of acc"),
            Metric(f"task/{task}/acc_retained", "share", "higher", _pct, f"{task} kept", TASKS, (),
                   "acc / the eval.baseline preset's acc on the same items"),
            Metric(f"task/{task}/time_s", "s", "lower", "{:.1f}", f"{task} s", TASKS, (),
                   "compute time of the run that finished the task (0 on a resumed or cached one's share)")]


declare(Metric("time/tasks_s", "s", "lower", "{:.1f}", "tasks s", TASKS, (), "the tasks stage's wall time"))
declare(  # issue 12: failures count, and each format's capacity under the scenario's SLO (runner/benchmark/capacity.py)
    Metric("serving/failure_rate", "share", "lower", _pct, "failed", SERVING, R,
           "(failed + not sent) / requests: what a deployment's max_failure_rate bounds"),
    Metric("serving/requests_timed_out", "", "lower", "{:.0f}", "timed out", SERVING, (),
           "requests given up at benchmark.request_timeout_s or at the end of the load; in the latency percentiles at that time"),
    Metric("serving/queue_s_p95", "s", "lower", "{:.3f}", "queue p95 s", SERVING, (),
           "poisson: scheduled arrival -> send (waiting for a free slot), included in TTFT and latency"),
    Metric("capacity/max_users", "users", "higher", "{:.0f}", "max users", SERVING, SR,
           "largest concurrency that met benchmark.slo (p95) and the failure bound"),
    Metric("capacity/bracketed", "", "neither", "{:.0f}", "exact", SERVING, (),
           "1: the next concurrency up was measured to miss the SLO; 0: the search stopped first (max_users is a lower bound)"),
    Metric("capacity/probes", "", "neither", "{:.0f}", "probes", SERVING, (), "loads the capacity search ran (the scenario's own included)"),
    Metric("capacity/search_s", "s", "lower", "{:.1f}", "search s", SERVING, (), "wall time of the extra capacity probes"),
)
