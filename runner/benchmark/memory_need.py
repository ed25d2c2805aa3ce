"""What a deployment needs in memory at a load, computed rather than measured; and vLLM's own KV cache size.

need = the artifact's weight bytes + KV bytes per token x users x context, where
KV bytes per token = layers x KV heads x head dim x 2 (K and V) x the KV cache's bytes per element,
users = the benchmark's concurrency (1 offline) and context = prompt + output tokens -- the scenario's
when the benchmark was set from it, and only such runs are judged against a scenario
(runner/report/scenario.py). The shape comes from the base model's config.json (num_hidden_layers,
num_key_value_heads or num_attention_heads, head_dim or hidden_size / num_attention_heads): a
quantization keeps it, a GGUF file included (its folder is the same model). The KV element size is the
one each engine stores its cache in (kv_dtype). It is a floor, not what a process holds: activations,
the runtime and an upcast of the weights (a 16-bit checkpoint computed in fp32) come on top, and a
sliding-window model keeps less KV. The measured peak catches those; the memory bound is judged on the
larger of the two (runner/report/measures.py). The pre-flight fit check (runner/benchmark/fit.py) estimates them
too, before quantizing, with planned_kv_dtype: these rules read from the format's preset instead of the artifact.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from runner.config import model_config
from runner.metrics import (
    MEMORY_ENGINE_KV_CACHE_TOKENS,
    MEMORY_ENGINE_MAX_CONCURRENCY,
    MEMORY_KV_BYTES_PER_TOKEN,
    MEMORY_NEED_BYTES,
)

log = logging.getLogger(__name__)

DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp16": 2, "bf16": 2, "fp32": 4}


@dataclass(frozen=True)
class KvShape:
    layers: int
    kv_heads: int
    head_dim: int

    def bytes_per_token(self, element_bytes: int) -> int:
        return self.layers * self.kv_heads * self.head_dim * 2 * element_bytes

    def __str__(self) -> str:
        return f"{self.layers} layers x {self.kv_heads} KV heads x head dim {self.head_dim}"


def kv_shape(config: dict) -> Optional[KvShape]:
    """The KV cache's shape from a HF config.json (a multimodal one's text_config); None where it says too little."""
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), dict):
        config = config["text_config"]
    layers, heads = config.get("num_hidden_layers"), config.get("num_attention_heads")
    kv_heads = config.get("num_key_value_heads") or heads
    hidden = config.get("hidden_size")
    head_dim = config.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    if not (isinstance(layers, int) and isinstance(kv_heads, int) and isinstance(head_dim, int)):
        return None
    return KvShape(layers, kv_heads, head_dim)


def base_config(folder: Path) -> dict:
    """A folder's config.json; {} where it has none."""
    path = Path(folder) / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


_config = base_config


def checkpoint_dtype(config: dict) -> Optional[str]:
    """The dtype config.json declares (runner/config/model_config.py's reading, the one the baseline rule uses)."""
    return model_config.model_dtype(config)


def kv_dtype(engine: str, artifact, hardware, base_config: dict) -> Tuple[str, int]:
    """(what the engine stores its KV cache in, bytes per element), as each engine is run by the runner."""
    manifest = artifact.manifest
    config = _config(artifact.path) or base_config
    on_cpu = not str(hardware.device).startswith("cuda")
    if engine == "llama_cpp":  # llama-cpp-python's and llama.cpp's servers: the runner sets no cache type
        return "f16 (llama.cpp's default cache type)", 2
    if engine == "exllamav2":
        return "fp16 (ExLlamaV2Cache)", 2
    if engine == "vllm":  # kv_cache_dtype auto: the dtype the model runs in
        from runner.config.checks import KV_CACHE_DTYPES
        from runner.engines.vllm import vllm_dtype

        chosen = getattr(hardware, "kv_cache_dtype", None) or "auto"
        if KV_CACHE_DTYPES.get(chosen):
            return f"{chosen} (vLLM's kv_cache_dtype, hardware.kv_cache_dtype)", int(KV_CACHE_DTYPES[chosen] or 2)
        name = vllm_dtype(artifact.path, hardware)
        name = checkpoint_dtype(config) if name == "auto" else name
        size = DTYPE_BYTES.get(name or "", 2)
        return f"{name or 'fp16'} (vLLM's kv_cache_dtype auto: the model's dtype)", size
    if engine == "torch":  # the cache holds the compute dtype: a GGUF file in fp32, cpu_compute_dtype on CPU
        if any(f.endswith(".gguf") for f in manifest.get("weight_files", [])):
            return "float32 (the dequantized GGUF file's compute dtype)", 4
        name = (manifest.get("cpu_compute_dtype") if on_cpu else None) or checkpoint_dtype(config) or "float32"
        return f"{name} (the compute dtype)", DTYPE_BYTES.get(name, 4)
    name = checkpoint_dtype(config) or "float16"  # other engines: assumed to cache in the checkpoint's dtype
    return f"{name} (assumed: the checkpoint's dtype)", DTYPE_BYTES.get(name, 2)


def planned_kv_dtype(engine: str, fmt, hardware, base_config: dict, cpu_compute_fp32: bool) -> Tuple[str, int]:
    """kv_dtype before the artifact exists (the pre-flight fit check, runner/benchmark/fit.py): the same rules, read
    from the format's preset and the base model's config instead of the artifact's manifest and folder."""
    on_cpu = not str(hardware.device).startswith("cuda")
    stored = str(fmt.dtype) if fmt.family == "torch_dtype" else checkpoint_dtype(base_config)
    if engine == "llama_cpp":
        return "f16 (llama.cpp's default cache type)", 2
    if engine == "exllamav2":
        return "fp16 (ExLlamaV2Cache)", 2
    if engine == "vllm":  # a quantized folder: auto on CUDA (the model's 16-bit dtype), bfloat16 on CPU
        chosen = str(getattr(hardware, "kv_cache_dtype", None) or "auto")
        if chosen.startswith("fp8"):
            return f"{chosen} (vLLM's kv_cache_dtype)", 1
        name = stored if fmt.family == "torch_dtype" else ("bfloat16" if on_cpu else stored)
        return f"{name or 'fp16'} (vLLM's kv_cache_dtype auto: the model's dtype)", DTYPE_BYTES.get(name or "", 2)
    if engine == "torch":
        if fmt.family == "gguf":
            return "float32 (the dequantized GGUF file's compute dtype)", 4
        name = "float32" if on_cpu and cpu_compute_fp32 else (stored or "float32")
        return f"{name} (the compute dtype)", DTYPE_BYTES.get(name, 4)
    name = stored or "float16"
    return f"{name} (assumed: the checkpoint's dtype)", DTYPE_BYTES.get(name, 2)


def users_and_context(bench_cfg) -> Tuple[int, int]:
    users = int(bench_cfg.concurrency) if getattr(bench_cfg, "kind", "offline") == "serving" else 1
    return users, int(bench_cfg.prompt_tokens) + int(bench_cfg.gen_tokens)


def need(artifact, model, engine: str, bench_cfg, hardware) -> Tuple[Dict[str, float], Dict[str, str]]:
    """(metrics, params) of the computed need at the benchmark's load; nothing where the shape is unreadable."""
    base = _config(model.path)
    shape = kv_shape(base) or kv_shape(_config(artifact.path))
    if shape is None:
        log.warning("no KV cache shape in %s/config.json: the computed memory need is not logged", model.path)
        return {}, {}
    what, element = kv_dtype(engine, artifact, hardware, base)
    users, context = users_and_context(bench_cfg)
    per_token = shape.bytes_per_token(element)
    total = float(artifact.manifest["weight_bytes"] + per_token * users * context)
    params = {
        "memory.kv_shape": f"{shape} (the base model's config.json)",
        "memory.kv_dtype": what,
        "memory.need_load": f"weights + KV cache at {users} user(s) x {context} tokens",
    }
    return {MEMORY_KV_BYTES_PER_TOKEN: float(per_token), MEMORY_NEED_BYTES: total}, params


def engine_reported_kv(server_log: Path) -> Dict[str, float]:
    """vLLM's own KV cache size ("<device> KV cache size: N tokens") and maximum concurrency ("Maximum concurrency
    for N tokens per request: Xx") from a server's log, or the EXL2 server's cache ("KV cache of N tokens"); {} where
    it says none."""
    from runner.engines.exllamav2 import reported_cache_tokens
    from runner.engines.vllm import reported

    try:
        text = Path(server_log).read_text(errors="replace")
    except OSError:
        return {}
    metrics = reported_metrics(reported(text))
    exl2_tokens = reported_cache_tokens(text)
    if exl2_tokens is not None and MEMORY_ENGINE_KV_CACHE_TOKENS not in metrics:
        metrics[MEMORY_ENGINE_KV_CACHE_TOKENS] = float(exl2_tokens)
    return metrics


def reported_metrics(report) -> Dict[str, float]:
    """The sizes a runner.engines.vllm.VllmReport holds, as metrics."""
    out = {}
    if report.kv_cache_tokens is not None:
        out[MEMORY_ENGINE_KV_CACHE_TOKENS] = float(report.kv_cache_tokens)
    if report.max_concurrency is not None:
        out[MEMORY_ENGINE_MAX_CONCURRENCY] = float(report.max_concurrency)
    return out
