"""Checks over the composed config that need no model, no text and no cache: run before any work.

The schemas (runner/config/schema.py) already reject typos and wrong types; these reject values of the
right type that cannot mean anything (0 threads, an empty eval stream, a window longer than it).
"""

import ipaddress
from typing import Tuple

from runner.errors import UserError
from runner.system.environment import usable_cores

# The cached baseline reference holds n_scored x kld_topk x 8 bytes (16 384 x 16 384 x 8 = 2 GiB at this cap). The
# tail past a few hundred tokens holds little mass, but merging it into one bucket loses its divergence: on SmolLM2
# top-1024 keeps 95-97 % of the full-vocabulary KLD, top-8192 99.6 % (docs/measurements.md, parity).
MAX_KLD_TOPK = 16384
EVAL_WINDOWS = ("sliding", "llama_perplexity")  # runner/quality/stream.py iter_windows
BENCHMARK_KINDS = ("offline", "serving")  # one stream through the engine | a real server under concurrent load
# The load generator's bounds: a load is finite, and aimed at this machine only
MAX_REQUESTS = 10_000
MAX_CONCURRENCY = 1_024
MAX_DURATION_S = 3_600.0
CACHE_REMOTES = ("mlflow",)  # where an artifact missing from the cache may be downloaded from


def _at_least(key: str, value, low, fix: str = "") -> None:
    if value < low:
        raise UserError(key, f"{value} is below the minimum {low}", fix or f"set {key} to {low} or more")


def _positive_or_none(key: str, value) -> None:
    if value is not None and not value > 0:
        raise UserError(key, f"{value} is not a positive number", f"set {key} > 0, or null for none")


def _within_stream(key: str, length: int, n_tokens: int, what: str, use: str = "") -> None:
    """A length cut from the eval stream (a window, a prompt) cannot be longer than the stream (eval.n_tokens)."""
    if length > n_tokens:
        raise UserError(
            key,
            f"{what} is longer than the eval stream (eval.n_tokens={n_tokens}){use}",
            f"lower {key} or raise eval.n_tokens",
        )


def check_hardware(hw) -> None:
    cores = usable_cores()
    if not 1 <= hw.threads <= cores:
        raise UserError(
            "hardware.threads",
            f"{hw.threads} threads asked; this machine has {cores} usable core(s)",
            f"set hardware.threads between 1 and {cores}",
        )
    _at_least("hardware.n_gpu_layers", hw.n_gpu_layers, -1, "use -1 (every layer), 0 (none) or a layer count")
    _at_least("hardware.n_gpus", hw.n_gpus, 0)
    _at_least("hardware.tensor_parallel_size", hw.tensor_parallel_size, 1)
    if not 0 < hw.gpu_memory_utilization <= 1:
        raise UserError(
            "hardware.gpu_memory_utilization",
            f"{hw.gpu_memory_utilization} is outside (0, 1]",
            "use a fraction of each GPU's memory, e.g. 0.85",
        )
    _positive_or_none("hardware.gpu_memory_bytes", hw.gpu_memory_bytes)
    _positive_or_none("hardware.memory_budget_bytes", hw.memory_budget_bytes)


def check_cache(cache) -> None:
    remote = cache.get("remote")
    if remote is not None and remote not in CACHE_REMOTES:
        raise UserError(
            "cache.remote",
            f"unknown remote '{remote}'",
            f"use {' or '.join(CACHE_REMOTES)} (artifacts uploaded with tracking.upload_artifacts=true), or null",
        )


def check_calibration(cal) -> None:
    _at_least("calibration.n_samples", cal.n_samples, 1)
    _at_least("calibration.seq_len", cal.seq_len, 1)


def check_eval(ev) -> None:
    _at_least(
        "eval.n_tokens", ev.n_tokens, 2, "set eval.n_tokens to a few thousand (a perplexity needs at least 2 tokens)"
    )
    _at_least("eval.ctx_len", ev.ctx_len, 2)
    _within_stream("eval.ctx_len", ev.ctx_len, ev.n_tokens, f"a window of {ev.ctx_len} tokens")
    if not 1 <= ev.stride <= ev.ctx_len:
        raise UserError(
            "eval.stride",
            f"{ev.stride} is outside 1..eval.ctx_len ({ev.ctx_len})",
            "set eval.stride to eval.ctx_len for disjoint windows",
        )
    if ev.windows not in EVAL_WINDOWS:
        raise UserError("eval.windows", f"unknown windows '{ev.windows}'", f"use one of {' or '.join(EVAL_WINDOWS)}")
    if ev.windows == "llama_perplexity" and ev.stride != ev.ctx_len:
        raise UserError(
            "eval.stride",
            f"{ev.stride}: eval.windows=llama_perplexity scores disjoint chunks of eval.ctx_len ({ev.ctx_len})",
            f"set eval.stride={ev.ctx_len}",
        )
    if ev.windows == "llama_perplexity" and ev.ctx_len < 4:
        raise UserError(
            "eval.ctx_len",
            f"{ev.ctx_len}: eval.windows=llama_perplexity scores the second half of each chunk but its last token",
            "set eval.ctx_len to 4 or more (llama-perplexity's default is 512)",
        )
    if not 1 <= ev.kld_topk <= MAX_KLD_TOPK:
        raise UserError(
            "eval.kld_topk",
            f"{ev.kld_topk} is outside 1..{MAX_KLD_TOPK} (KLD over the baseline's top-k tokens)",
            "use the default 64",
        )


def check_benchmark(b, ev) -> None:
    if b.kind not in BENCHMARK_KINDS:
        raise UserError("benchmark.kind", f"unknown kind '{b.kind}'", f"use one of {' or '.join(BENCHMARK_KINDS)}")
    _at_least("benchmark.prompt_tokens", b.prompt_tokens, 1)
    _at_least("benchmark.gen_tokens", b.gen_tokens, 2)
    _at_least("benchmark.warmup", b.warmup, 0)
    _within_stream(
        "benchmark.prompt_tokens", b.prompt_tokens, ev.n_tokens, str(b.prompt_tokens), " the prompts are cut from"
    )
    if b.kind == "offline":
        _at_least("benchmark.repeats", b.repeats, 1)
        return
    check_load_config(b)
    if not 0 <= b.port <= 65535:
        raise UserError("benchmark.port", f"{b.port} is not a TCP port", "use 0 (a free port) or 1..65535")
    if not b.startup_timeout_s > 0:
        raise UserError(
            "benchmark.startup_timeout_s",
            f"{b.startup_timeout_s} is not a positive number of seconds",
            "set it to a few minutes",
        )
    for name in ("ttft_s", "tpot_s", "latency_s"):
        _positive_or_none(f"benchmark.slo.{name}", b.slo[name])


def bootstrap_settings(eval_cfg) -> Tuple[int, int]:
    """eval.bootstrap's (resamples, seed); defaults where a config has no such group."""
    boot = getattr(eval_cfg, "bootstrap", None)
    resamples, seed = getattr(boot, "resamples", 1000), getattr(boot, "seed", 0)
    if not isinstance(resamples, int) or resamples < 0:
        raise UserError(
            "eval.bootstrap.resamples",
            f"must be an integer >= 0 (got {resamples!r})",
            "set it to e.g. 1000, or 0 for no intervals",
        )
    if not isinstance(seed, int) or seed < 0:
        raise UserError("eval.bootstrap.seed", f"must be an integer >= 0 (got {seed!r})", "set it to e.g. 0")
    return resamples, seed


def check_load_config(cfg) -> None:
    """One-line errors for a load that is unbounded, malformed or not aimed at this machine."""
    check_loopback(cfg.host)
    if not 1 <= cfg.requests <= MAX_REQUESTS:
        raise UserError("benchmark.requests", f"{cfg.requests} requests asked; 1..{MAX_REQUESTS} allowed", "lower it")
    if not 1 <= cfg.concurrency <= MAX_CONCURRENCY:
        raise UserError("benchmark.concurrency", f"{cfg.concurrency} asked; 1..{MAX_CONCURRENCY} allowed", "change it")
    if not 0 < cfg.max_duration_s <= MAX_DURATION_S:
        raise UserError(
            "benchmark.max_duration_s", f"{cfg.max_duration_s} s asked; (0, {MAX_DURATION_S:g}] allowed", "change it"
        )
    if cfg.arrival not in ("closed", "poisson"):
        raise UserError("benchmark.arrival", f"unknown arrival '{cfg.arrival}'", "use closed or poisson")
    if cfg.arrival == "poisson" and not cfg.rate > 0:
        raise UserError("benchmark.rate", f"poisson arrivals need a rate > 0 (got {cfg.rate})", "set benchmark.rate")
    if cfg.gen_tokens < 2 or cfg.prompt_tokens < 1:
        raise UserError("benchmark.gen_tokens", "need gen_tokens >= 2 and prompt_tokens >= 1", "raise them")
    if not 0 < cfg.request_timeout_s:
        raise UserError("benchmark.request_timeout_s", "must be > 0", "set it to a few minutes")


def check_loopback(host: str) -> None:
    """The load generator only talks to this machine."""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise UserError(
            "benchmark.host",
            f"'{host}' is not a loopback address: the load generator only sends to this machine",
            "use benchmark.host=127.0.0.1 (or ::1, localhost)",
        )
