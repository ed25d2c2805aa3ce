"""The pre-flight fit check: will a format fit the scenario's hardware, estimated before quantizing?

Before a job of a sweep with a scenario (deployment=...) does any work, its format's memory at the scenario's load
is estimated from the base model's config.json alone, per card on a GPU profile (the fullest card) and for the
engine's process on a CPU one:

    weights     parameters counted from the config's shapes (embeddings, each layer's attention and MLP, lm_head
                unless tied, norms) x the bits per weight the format will store (Format.weight_bits: its preset's
                bits and group scales, a GGUF type's known average, EXL2's bpw) -- at the compute dtype where the
                engine upcasts (the torch engine computes GGUF files and, on CPU, the weight-only families in fp32)
    KV cache    users x (prompt + output) tokens x KV bytes per token at the engine's KV dtype (memory_need.py)
    activations the largest forward: its tokens x (4 x hidden + 2 x FFN) x the compute dtype's bytes, the attention
                scores of one prompt, and one fp32 logits row per sequence
    runtime     on a GPU the CUDA context and library workspaces per card (CUDA_RUNTIME_BYTES, an outside figure);
                on CPU the engine's fixed cost, measured once per machine by runner/benchmark/runtime_probe.py (the
                peak RSS of a process like the benchmark's worker running a negligible model of the architecture)

On a GPU profile a server that shards (vLLM: tensor_parallel_size; llama.cpp and ExLlamaV2: their layers split over
n_gpus) divides weights and KV cache over its shards; vLLM replicates the model once per data-parallel replica
(hardware.data_parallel_size where the profile has it, else n_gpus / tensor_parallel_size), each serving its share
of the users. The capacity is one card's gpu_memory_bytes x gpu_memory_utilization, on CPU the scenario's or the
profile's memory budget (none: not judged).
A format that does not fit is skipped before any work: its run is logged FINISHED with the tag `skipped` holding the
reason, and the decision lists it among the rejected formats. After a benchmark the same estimate is logged next to
the measured peak (memory/fit_estimate_over_measured).
"""

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from runner.benchmark import memory_need
from runner.errors import UserError
from runner.formats import get_format
from runner.formats.base import WeightBits
from runner.metrics import (
    MEMORY_FIT_ESTIMATE_BYTES,
    MEMORY_FIT_ESTIMATE_OVER_MEASURED,
    PERF_PEAK_PSS_BYTES,
    PERF_PEAK_RSS_BYTES,
    PERF_PEAK_VRAM_GPU_MAX_BYTES,
)
from runner.system.environment import cpu_name
from runner.system.packages import dist_versions

log = logging.getLogger(__name__)

GIB = 1024**3
# Per card, besides the model: the CUDA context (~0.3-0.5 GiB with torch's kernels loaded) and cuBLAS/NCCL
# workspaces. Not measured on these machines (no GPU here): the figure usually quoted for recent drivers.
CUDA_RUNTIME_BYTES = 768 * 1024**2
# Tokens in the largest forward pass of a serving engine: vLLM's chunked-prefill budget on GPUs
# (max_num_batched_tokens), llama.cpp's physical batch (n_ubatch); others batch the prompts in flight.
PREFILL_TOKENS = {"vllm": 8192, "llama_cpp": 512}
# The engines whose fixed runtime on CPU runner/benchmark/runtime_probe.py measures, and their distributions
ENGINE_DISTS = {"torch": ("torch", "transformers"), "llama_cpp": ("llama_cpp_python",)}
# Servers that spread one model's layers over all the profile's GPUs (n_gpu_layers=-1 with a tensor split,
# ExLlamaV2's autosplit), where vLLM shards each layer over tensor_parallel_size
LAYER_SPLIT = ("llama_cpp", "exllamav2")


@dataclass(frozen=True)
class ParamCounts:
    """A decoder-only model's parameters by where they sit, counted from config.json's shapes."""

    embedding: int
    linear: int  # the decoder blocks' attention and MLP projections: what weight-only formats quantize
    head: int  # lm_head; 0 when tied to the embedding
    norms: int
    hidden: int
    ffn: int
    heads: int
    vocab: int

    @property
    def total(self) -> int:
        return self.embedding + self.linear + self.head + self.norms


NOT_GATED = ("gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi")  # an MLP of 2 matrices, not 3


def param_counts(config: dict) -> Optional[ParamCounts]:
    """Parameters from a HF config.json's shapes (a multimodal one's text_config); None where it says too little."""
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    shape = [config.get(k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")]
    sizes = [v for v in shape if isinstance(v, int) and v > 0]
    if len(sizes) < len(shape):
        return None
    hidden, layers, heads, vocab = sizes
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    ffn = config.get("intermediate_size") or config.get("n_inner") or config.get("ffn_dim") or 4 * hidden
    experts = config.get("num_local_experts") or config.get("num_experts") or 1
    attention = hidden * head_dim * (heads + 2 * kv_heads) + heads * head_dim * hidden
    mlp = (2 if config.get("model_type") in NOT_GATED else 3) * hidden * ffn * experts
    router = hidden * experts if experts > 1 else 0
    tied = config.get("tie_word_embeddings", True)  # transformers' PretrainedConfig default
    return ParamCounts(
        embedding=vocab * hidden,
        linear=layers * (attention + mlp),
        head=0 if tied else vocab * hidden,
        norms=layers * (2 * hidden + router) + hidden,
        hidden=hidden,
        ffn=ffn,
        heads=heads,
        vocab=vocab,
    )


@dataclass(frozen=True)
class Placement:
    where: str  # "per GPU" | "host"
    server: str  # what holds the model: a server name, or the offline engine
    engine: str  # whose rules give the compute and KV dtypes
    shards: int  # the cards one copy of the model is spread over
    replicas: int  # copies of the model, each serving users / replicas
    tensor_parallel: bool


def placement(cfg) -> Placement:
    hw = cfg.hardware
    gpu = str(hw.device).startswith("cuda")
    if cfg.benchmark.get("kind") == "serving":
        from runner.benchmark.servers import SERVERS, resolve_server

        server = resolve_server(cfg)
        engine = SERVERS[server].serves[0]
    else:
        server = engine = str(cfg.format.engine)
    if not gpu:
        return Placement("host", server, engine, 1, 1, False)
    if engine == "vllm":
        tp = max(1, int(hw.tensor_parallel_size))
        replicas = int(getattr(hw, "data_parallel_size", 0) or max(1, int(hw.n_gpus) // tp))
        return Placement("per GPU", server, engine, tp, replicas, True)
    if engine in LAYER_SPLIT:
        return Placement("per GPU", server, engine, max(1, int(hw.n_gpus)), 1, False)
    return Placement("per GPU", server, engine, 1, 1, False)


@dataclass(frozen=True)
class FitEstimate:
    place: Placement
    weights: float
    kv: float
    activations: float
    runtime: Optional[float]
    capacity: Optional[float]
    capacity_what: str
    parts: Dict[str, str]

    @property
    def total(self) -> float:
        return self.weights + self.kv + self.activations + (self.runtime or 0.0)

    @property
    def fits(self) -> bool:
        return self.capacity is None or self.total <= self.capacity

    def summary(self) -> str:
        gib = lambda v: f"{v / GIB:.1f} GiB"  # noqa: E731
        runtime = gib(self.runtime) if self.runtime is not None else "runtime not measured"
        shards = f"{self.place.shards} shards" if self.place.shards > 1 else "the whole model"
        replicas = f", {self.place.replicas} replicas" if self.place.replicas > 1 else ""
        share = f" ({shards}{replicas})" if self.place.where == "per GPU" else ""
        return (
            f"{gib(self.total)} {self.place.where}{share} = weights {gib(self.weights)} + KV cache {gib(self.kv)} + "
            f"activations {gib(self.activations)} + runtime {runtime}"
        )

    def reason(self) -> str:
        """Why it does not fit, in one line (for the skipped run and the decision)."""
        return f"does not fit: needs {self.summary()}, more than {self.capacity_what}"

    def params(self) -> Dict[str, str]:
        verdict = "fits" if self.fits else "does not fit"
        if self.capacity is None:
            verdict = "not judged (no memory budget)"
        return {
            "fit.verdict": verdict,
            "fit.estimate": self.summary(),
            "fit.capacity": self.capacity_what,
            "fit.server": f"{self.place.server} ({self.place.engine} engine)",
            **{f"fit.{k}": v for k, v in self.parts.items()},
        }


def estimate(
    cfg, base_config: dict, runtime_bytes: Optional[Callable[[str], Optional[int]]] = None
) -> Optional[FitEstimate]:
    """The estimate for this job's format at its benchmark's load; None where the config or the format says too
    little (then nothing is judged). runtime_bytes(engine) gives a CPU engine's empty-process RSS."""
    counts, shape = param_counts(base_config), memory_need.kv_shape(base_config)
    fmt = get_format(cfg.format.family)
    tp = cfg.hardware.tensor_parallel_size if str(cfg.hardware.device).startswith("cuda") else 1
    bits = fmt.weight_bits(cfg.format, base_config, tp)
    if counts is None or shape is None or bits is None:
        return None
    hw = cfg.hardware
    place = placement(cfg)
    gpu = place.where == "per GPU"
    model_bits = 8 * memory_need.DTYPE_BYTES.get(memory_need.checkpoint_dtype(base_config) or "", 2)
    upcast = place.engine == "torch" and (
        cfg.format.family == "gguf" or (not gpu and getattr(fmt, "CPU_COMPUTE_FP32", False))
    )
    stored = WeightBits(32.0, 32.0, 32.0, "fp32 (the torch engine's compute dtype here)") if upcast else bits
    if upcast and cfg.format.family != "gguf":  # weight-only on CPU: the packed layers stay packed, the rest fp32
        stored = WeightBits(bits.linear, 32.0, 32.0, bits.what + "; the rest computed in fp32 on CPU")
    other = stored.other if stored.other is not None else model_bits
    head = stored.head if stored.head is not None else other
    bits_total = counts.linear * stored.linear + (counts.embedding + counts.norms) * other + counts.head * head
    weights: float = bits_total / 8

    kv_what, kv_element = memory_need.planned_kv_dtype(
        place.engine, cfg.format, hw, base_config, getattr(fmt, "CPU_COMPUTE_FP32", False)
    )
    users, context = memory_need.users_and_context(cfg.benchmark)
    users_per_copy = -(-users // place.replicas)
    kv: float = shape.bytes_per_token(kv_element) * users_per_copy * context

    act_bytes = 4 if (upcast or place.engine == "llama_cpp" or kv_element == 4) else 2
    prompt = int(cfg.benchmark.prompt_tokens)
    activations: float
    forward = min(users_per_copy * prompt, PREFILL_TOKENS.get(place.engine, users_per_copy * prompt))
    activations = (
        forward * (4 * counts.hidden + 2 * counts.ffn) * act_bytes
        + counts.heads * prompt * prompt * act_bytes
        + users_per_copy * counts.vocab * 4
    )
    if gpu:
        weights, kv = weights / place.shards, kv / place.shards
        activations = activations / place.shards if place.tensor_parallel else activations
        runtime: Optional[float] = float(CUDA_RUNTIME_BYTES)
        capacity = float(hw.gpu_memory_bytes) * float(hw.gpu_memory_utilization) if hw.gpu_memory_bytes else None
        capacity_what = (
            f"one card's {hw.gpu_memory_bytes / GIB:.1f} GiB x gpu_memory_utilization {hw.gpu_memory_utilization} "
            f"= {capacity / GIB:.1f} GiB (hardware={hw.name})"
            if capacity
            else f"hardware={hw.name} sets no gpu_memory_bytes"
        )
        runtime_what = f"{CUDA_RUNTIME_BYTES / GIB:.2f} GiB per card (CUDA context and workspaces)"
    else:
        measured = (runtime_bytes or (lambda engine: empty_process_bytes(engine, base_config)))(place.engine)
        runtime = float(measured) if measured is not None else None
        d = cfg.get("deployment")
        budget = (d.get("memory_budget_bytes") if d is not None else None) or hw.get("memory_budget_bytes")
        capacity = float(budget) if budget else None
        capacity_what = (
            f"the memory budget {capacity / GIB:.1f} GiB" if capacity else f"hardware={hw.name} sets no memory budget"
        )
        runtime_what = (
            f"{runtime / GIB:.2f} GiB: peak RSS of the {place.engine} engine's process with a negligible model "
            "(runner/benchmark/runtime_probe.py)"
            if runtime is not None
            else f"not measured for the {place.engine} engine"
        )
    parts = {
        "params": f"{counts.total / 1e9:.3f} B parameters from config.json ({counts.linear / 1e9:.3f} B in the "
        f"decoder blocks' linear layers, {counts.embedding / 1e9:.3f} B embedding, "
        f"{'tied lm_head' if not counts.head else f'{counts.head / 1e9:.3f} B lm_head'})",
        "weight_bits": f"{stored.linear:.3f} bits per linear weight, {other:g} for the rest"
        + (f", {head:g} for lm_head" if head != other else "")
        + f" ({stored.what or bits.what})",
        "kv": f"{users_per_copy} user(s) x {context} tokens x {shape.bytes_per_token(kv_element)} B/token "
        f"({shape}; {kv_what})",
        "activations": f"{forward} tokens in the largest forward x (4 x hidden + 2 x FFN) x {act_bytes} B, one "
        f"prompt's attention scores, {users_per_copy} fp32 logits row(s)",
        "runtime": runtime_what,
    }
    return FitEstimate(place, weights, kv, activations, runtime, capacity, capacity_what, parts)


def empty_process_bytes(engine: str, base_config: dict, cache_file: Optional[Path] = None) -> Optional[int]:
    """The engine's fixed runtime on CPU: peak RSS of runner/benchmark/runtime_probe.py (the worker's imports, the
    engine, and for torch the architecture shrunk to a negligible size run once); None for an engine whose process is
    not this venv's python (vLLM, OpenVINO run in their own venvs). Measured once per machine, interpreter, library
    versions and architecture (memoized in cache_file)."""
    dists = ENGINE_DISTS.get(engine)
    if dists is None:
        return None
    text = base_config.get("text_config")
    arch = (text if isinstance(text, dict) else base_config).get("model_type", "?") if engine == "torch" else "-"
    key = f"{engine}|{arch}|{sys.executable}|{dist_versions(*dists)}|{cpu_name()}"  # a shared cache: per machine kind
    memo = _read_json(cache_file) if cache_file else {}
    if key in memo:
        return int(memo[key])
    cmd = [sys.executable, "-m", "runner.benchmark.runtime_probe", engine, json.dumps(base_config)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
        value = int(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError) as e:
        log.warning("could not measure the %s engine's fixed runtime (%s): left out of the estimate", engine, e)
        return None
    if cache_file:
        memo[key] = value
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_file.with_name(f".{cache_file.name}.{os.getpid()}")
            partial.write_text(json.dumps(memo, indent=2))
            os.replace(partial, cache_file)  # jobs of a sweep may write at once: whole files only
        except OSError as e:  # a read-only cache: measured again next time
            log.info("could not memoize the %s runtime in %s (%s)", engine, cache_file, e)
    return value


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# A fact of the machine, not of a cache's contents (its key names the interpreter, the libraries and the CPU): kept
# per user beside llama.cpp's tool builds, so fresh caches (and every test's) do not measure it again.
RUNTIME_MEMO = Path.home() / ".cache" / "qrun" / "fit_runtime.json"


def runtime_memo(cfg, base_config: dict) -> Callable[[str], Optional[int]]:
    """empty_process_bytes memoized per machine (RUNTIME_MEMO)."""
    return lambda engine: empty_process_bytes(engine, base_config, RUNTIME_MEMO)


def preflight(cfg, base_config: dict) -> Optional[FitEstimate]:
    """The job's verdict before any work; None where nothing could be estimated (the job runs)."""
    try:
        est = estimate(cfg, base_config, runtime_memo(cfg, base_config))
    except UserError:  # e.g. no server for the format: the job's own checks say it, naming the key
        return None
    if est is None:
        log.info("%s: no pre-flight fit estimate (config.json or the format says too little)", cfg.format.name)
    return est


def after_run(cfg, base_config: dict, measured: Dict[str, float]) -> Dict[str, float]:
    """The estimate and estimate / measured, for the metrics logged after a benchmark."""
    try:
        est = estimate(cfg, base_config, runtime_memo(cfg, base_config))
    except UserError:
        return {}
    if est is None:
        return {}
    if est.place.where == "per GPU":
        peak = measured.get(PERF_PEAK_VRAM_GPU_MAX_BYTES)
    else:
        peak = measured.get(PERF_PEAK_PSS_BYTES) or measured.get(PERF_PEAK_RSS_BYTES)
    out = {MEMORY_FIT_ESTIMATE_BYTES: est.total}
    if peak:
        out[MEMORY_FIT_ESTIMATE_OVER_MEASURED] = est.total / float(peak)
    return out
