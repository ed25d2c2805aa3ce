"""Checks over the composed config that need no model, no text and no cache: run before any work.

The schemas (runner/config/schema.py) already reject typos and wrong types; these reject values of the
right type that cannot mean anything (0 threads, an empty eval stream, a window longer than it).
"""

import ipaddress
import re
from typing import Dict, Optional, Tuple

from runner.errors import UserError
from runner.paths import options
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
# hardware.kv_cache_dtype: vLLM's --kv-cache-dtype values the runner accepts -> bytes per element (None: the model's)
KV_CACHE_DTYPES: Dict[str, Optional[int]] = {
    "auto": None,
    "float16": 2,
    "bfloat16": 2,
    "fp8": 1,
    "fp8_e4m3": 1,
    "fp8_e5m2": 1,
}
# vLLM engine arguments the runner sets itself (the compared configuration): hardware.vllm_engine_args may not
# override them; the value says where they come from
VLLM_RUNNER_ARGS = {
    "model": "the artifact",
    "served_model_name": "the format's name",
    "host": "benchmark.host",
    "port": "benchmark.port",
    "tensor_parallel_size": "hardware.tensor_parallel_size",
    "data_parallel_size": "hardware.data_parallel_size",
    "gpu_memory_utilization": "hardware.gpu_memory_utilization",
    "kv_cache_dtype": "hardware.kv_cache_dtype",
    "max_model_len": "the benchmark's prompt + output tokens (the eval's window offline)",
    "max_num_seqs": "benchmark.concurrency (or benchmark.capacity.max_users)",
    "enable_prefix_caching": "off: no request may reuse another's prefix",
    "max_logprobs": "the eval's top-k log-probs",
    "seed": "0",
    "dtype": "the artifact's dtype",
    "enforce_eager": "the device: on on CPU (no graph compilation), off on CUDA (CUDA graphs)",
    "distributed_executor_backend": "the device: one process on CPU, vLLM's default on CUDA",
}
_ARG_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


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
    check_gpu_parallelism(hw)
    if hw.get("kv_cache_dtype", "auto") not in KV_CACHE_DTYPES:
        raise UserError(
            "hardware.kv_cache_dtype",
            f"unknown KV cache dtype '{hw.kv_cache_dtype}'",
            f"use one of {list(KV_CACHE_DTYPES)} (vLLM's --kv-cache-dtype)",
        )
    check_vllm_engine_arg_names(hw.get("vllm_engine_args") or {})


def check_gpu_parallelism(hw) -> None:
    """vLLM's replicas x the GPUs each shards over must fit the profile's GPUs (a CPU profile runs one rank)."""
    dp = hw.get("data_parallel_size", 1)
    _at_least("hardware.data_parallel_size", dp, 1)
    if not str(hw.device).startswith("cuda") or not hw.n_gpus:
        if dp > 1:
            raise UserError(
                "hardware.data_parallel_size",
                f"{dp} replicas asked on a profile without GPUs ({hw.name})",
                "set hardware.data_parallel_size=1 here",
            )
        return
    if hw.tensor_parallel_size * dp > hw.n_gpus:
        raise UserError(
            "hardware.data_parallel_size" if dp > 1 else "hardware.tensor_parallel_size",
            f"tensor parallel {hw.tensor_parallel_size} x data parallel {dp} needs "
            f"{hw.tensor_parallel_size * dp} GPUs and the profile has {hw.n_gpus} (hardware.n_gpus)",
            "make hardware.tensor_parallel_size x hardware.data_parallel_size at most hardware.n_gpus",
        )


def check_vllm_engine_arg_names(args) -> None:
    """hardware.vllm_engine_args: EngineArgs field names (snake_case), none of those the runner sets itself."""
    for name in args:
        key = f"hardware.vllm_engine_args.{name}"
        if not _ARG_NAME.match(str(name)):
            raise UserError(
                key,
                f"'{name}' is not a vLLM engine argument name",
                "name it as vLLM's EngineArgs field (snake_case: enable_chunked_prefill, not --enable-chunked-prefill)",
            )
        if name in VLLM_RUNNER_ARGS:
            raise UserError(key, f"the runner sets {name} itself (from {VLLM_RUNNER_ARGS[name]})", "remove it")


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


def check_eval(ev, device: str = "cpu") -> None:
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
    check_noise_floor(ev, device)
    if not 1 <= ev.kld_topk <= MAX_KLD_TOPK:
        raise UserError(
            "eval.kld_topk",
            f"{ev.kld_topk} is outside 1..{MAX_KLD_TOPK} (KLD over the baseline's top-k tokens)",
            "use the default 64",
        )


def check_noise_floor(ev, device: str = "cpu") -> None:
    """eval.noise_floor names a format preset other than the baseline (whose KLD to itself is 0 by construction);
    eval.baseline=auto is fp32 on the CPU (on CUDA it depends on the model, known only when the job runs)."""
    name = ev.get("noise_floor")
    if name is None:
        return
    if name not in options("format"):
        raise UserError("eval.noise_floor", f"no format preset '{name}'", f"use one of {options('format')}, or null")
    baseline = "fp32" if ev.baseline == "auto" and not str(device).startswith("cuda") else ev.baseline
    if name == baseline:
        raise UserError(
            "eval.noise_floor",
            f"'{name}' is the baseline itself (eval.baseline): its loss is 0 by construction, no floor",
            "name the baseline's weights in another dtype or engine, e.g. eval.noise_floor=fp16",
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
