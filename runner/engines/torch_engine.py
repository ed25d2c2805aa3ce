"""transformers/PyTorch engine: loads any HF folder (safetensors) that from_pretrained understands, or a
GGUF artifact's file (transformers dequantizes it: the file's weights, computed in fp32).

torch is imported inside the methods: asking this engine its version (a resumed job's key) must not load it."""

import inspect
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Generator, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.errors import UserError
from runner.system.packages import dist_versions
from runner.system.placement import placement


def torchao_int8_kernel(device: str) -> str:
    """The matmul torchao's W8A8 (int_scaled_matmul) takes on `device`: torchao's checks, read here now."""
    import torch
    from torchao.utils import _cpu_is_amx_tile_supported, _cpu_is_vnni_supported, torch_version_at_least

    if not str(device).startswith("cpu"):
        return "torchao int_scaled_matmul (CUDA)"
    if _cpu_is_amx_tile_supported():
        return "torch._int_mm s8s8 (AMX)"
    vnni = _cpu_is_vnni_supported()
    if vnni and torch_version_at_least("2.12.0.dev"):
        return "torch._int_mm u8s8 (AVX512-VNNI)"
    why = f"AVX512-VNNI but torch {torch.__version__} < 2.12" if vnni else "no AMX, no AVX512-VNNI"
    return f"torch._int_mm s8s8 ({why}; CPU capability {torch.backends.cpu.get_cpu_capability()})"


def _torchao_quant_type(folder: Path) -> Optional[str]:
    """The torchao config a checkpoint was saved with (its config.json), None for any other checkpoint."""
    config = folder / "config.json"
    q = (json.loads(config.read_text()).get("quantization_config") if config.is_file() else None) or {}
    if q.get("quant_method") != "torchao":
        return None
    quant_type = q.get("quant_type") or {}
    return (
        (quant_type.get("default") or quant_type).get("_type", "?") if isinstance(quant_type, dict) else str(quant_type)
    )


MAX_WINDOWS_AT_ONCE = 4  # each window thread runs torch's whole intra-op pool and holds ~3 x ctx x vocab floats


def windows_at_once(dtype, device: str, threads: int) -> int:
    """How many windows logprobs_many scores at once: `threads` for fp16 on a CPU without oneDNN fp16, else 1.

    There torch's fp16 GEMM (no AVX512-FP16/AMX-FP16, read on this machine now) does use both cores (512x576x1536:
    47 ms on 1 thread, 23 ms on 2, idle 2-core box), but the rest of a window's forward leaves them partly idle:
    4 SmolLM2 windows took 18.3-20.5 s one at a time, 16.9-17.1 s two at a time, 17.4-18.0 s four at a time.
    """
    import torch

    if (
        threads > 1
        and str(device) == "cpu"
        and dtype == torch.float16
        and not torch.ops.mkldnn._is_mkldnn_fp16_supported()
    ):
        return min(threads, MAX_WINDOWS_AT_ONCE)
    return 1


def map_in_order(fn, items: Iterable, workers: int) -> Iterator:
    """fn(item) for each item, in order, computed in up to `workers` threads (torch ops release the GIL).

    At most `workers` calls in flight; a call's error is raised at its place in the order; a consumer that
    stops early cancels what has not started and waits for what has."""
    with ThreadPoolExecutor(workers, thread_name_prefix="qrun-window") as pool:
        pending = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) == workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _is_gpu(device) -> bool:
    """An entry of accelerate's device map on a GPU: an index, or a "cuda..." name (not "cpu" or "disk")."""
    return isinstance(device, int) or str(device).startswith("cuda")


class TorchLoaded(LoadedModel):
    engine = "torch"

    def __init__(self, hf_model, device: str):
        import torch

        self.model, self.device = hf_model, device
        if str(device).startswith("cuda"):
            # a model spread over GPUs (accelerate's hf_device_map) runs on each of them: wait for all
            spread = getattr(hf_model, "hf_device_map", None) or {}
            gpus = sorted({d for d in spread.values() if _is_gpu(d)}, key=str) or [device]

            def sync_all() -> None:
                for gpu in gpus:
                    torch.cuda.synchronize(gpu)

            self.sync = sync_all
        self.windows_at_once = windows_at_once(hf_model.dtype, device, torch.get_num_threads())
        takes = inspect.signature(hf_model.forward).parameters
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in takes else {}

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ids = torch.tensor([list(input_ids)], device=self.device)
            logits = self.model(input_ids=ids, use_cache=False).logits[0]
            return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def logprobs_many(self, windows: Iterable[Sequence[int]]) -> Generator[np.ndarray, None, None]:
        """logprobs() of each window, in order; windows_at_once of them computed at a time (each is independent,
        so the arrays are the same as one by one)."""
        if self.windows_at_once == 1:
            return (self.logprobs(ids) for ids in windows)
        return map_in_order(self.logprobs, windows, self.windows_at_once)

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        import torch

        with torch.inference_mode():
            return self._generate(torch.tensor([prompt_ids], device=self.device), new_tokens)

    def _generate(self, ids, new_tokens: int) -> GenerationTiming:
        self.sync()
        start = time.perf_counter()
        # only the last position's logits, as llama.cpp, vLLM and ExLlamaV2 compute at prefill: the full-vocabulary
        # head over every prompt position would be timed as prefill
        out = self.model(input_ids=ids, use_cache=True, **self._last_logits_only)
        token = out.logits[0, -1].argmax().view(1, 1)
        self.sync()
        ttft = time.perf_counter() - start
        past = out.past_key_values
        for _ in range(new_tokens - 1):
            out = self.model(input_ids=token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        self.sync()
        return GenerationTiming(ttft_s=ttft, total_s=time.perf_counter() - start, new_tokens=new_tokens)

    def close(self) -> None:
        del self.model


def compute_dtype(manifest: dict, device: str) -> str:
    """The dtype the torch engine computes an artifact in (evaluate, the offline benchmark, `transformers serve`):
    a GGUF's dequantized weights in float32; on CPU the format's `cpu_compute_dtype` where it asks for one (fp32 for
    the weight-only folders: fp16 matmuls are 5-13x slower on AVX2); else "auto", the checkpoint's own dtype."""
    if any(f.endswith(".gguf") for f in manifest.get("weight_files", ())):
        return "float32"
    return (manifest.get("cpu_compute_dtype") if str(device) == "cpu" else None) or "auto"


class TorchEngine(Engine):
    NAME = "torch"

    def version(self) -> str:
        return dist_versions("torch", "transformers")

    def check_available(self, hardware) -> None:
        import torch

        if hardware.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(
                "hardware.device",
                f"'{hardware.device}' needs a CUDA GPU and torch sees none",
                "use hardware=cpu on this machine",
            )

    def kernel(self, artifact, hardware) -> Optional[str]:
        """torchao checkpoints: the matmul that runs them where they are loaded (not the manifest's, from where they
        were quantized); None for the rest."""
        quant_type = _torchao_quant_type(Path(artifact.path))
        if quant_type == "Int8DynamicActivationInt8WeightConfig":
            return torchao_int8_kernel(hardware.device)
        return None  # other torchao configs: not described here, so not claimed

    def load(self, artifact, model, hardware, context_tokens: Optional[int] = None) -> TorchLoaded:
        """The artifact on the profile's placement (runner/system/placement.py): the CPU, or the profile's GPUs,
        spread by accelerate within a per-card cap."""
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(hardware.threads)
        dtype = compute_dtype(artifact.manifest, hardware.device)
        where = placement(hardware)
        placed = {"device_map": where.device_map, **({"max_memory": where.max_memory} if where.max_memory else {})}
        gguf = [f for f in artifact.manifest["weight_files"] if f.endswith(".gguf")]
        if gguf:  # transformers dequantizes the file: its stored weights, computed in fp32 by torch
            hf_model = AutoModelForCausalLM.from_pretrained(
                artifact.path, gguf_file=gguf[0], dtype=getattr(torch, dtype), **placed
            ).eval()
        else:
            hf_model = AutoModelForCausalLM.from_pretrained(
                artifact.path,
                dtype=dtype,
                use_safetensors=not model.allow_pickle,
                trust_remote_code=model.trust_remote_code,
                **placed,
            ).eval()
        # accelerate puts what exceeds the GPUs' caps on the CPU or the disk, and runs it from there, slowly
        spilled = sorted({str(d) for d in (getattr(hf_model, "hf_device_map", None) or {}).values() if not _is_gpu(d)})
        if where.max_memory and spilled:
            del hf_model
            raise UserError(
                "hardware",
                f"{artifact.manifest['format']} does not fit {where.text}: accelerate put part of it on {spilled} "
                f"(hardware={hardware.name})",
                "use a profile with more GPU memory (hardware.n_gpus, hardware.gpu_memory_bytes) or a smaller format",
            )
        return TorchLoaded(hf_model, where.first_device)
