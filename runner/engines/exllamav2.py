"""ExLlamaV2 engine: runs EXL2 folders on CUDA. exllamav2 is imported only after the CUDA check
(at import it compiles or loads its CUDA extension, and raises OSError without CUDA_HOME).

Eval: one forward of the window with a fresh cache gives fp16 logits for every position; log-softmax
in float32 over the full vocabulary, so ppl/KLD/top-1 are computed exactly as for the torch engine.
Generation: prefill the prompt into the KV cache, then greedy decoding one token per forward.
Memory: the cache holds the longest sequence the load asks for (the eval window, the benchmark's prompt + output),
rounded up to ExLlamaV2's 256-token page, not the model's max_seq_len (131072 tokens on Llama 3.1 8B is 16 GiB of
fp16 KV cache, which inflated the measured VRAM 2-4x). The weights go to the profile's GPUs only (hardware.n_gpus),
split evenly by ExLlamaV2's manual split (`model.load(gpu_split)`, GiB per card in device order); its autosplit
would fill every visible GPU whatever the profile says. The EXL2 server (runner/engines/workers/exl2_server.py) sizes
its paged cache and splits its weights with the same functions.
"""

import re
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.system.gpu import require_cuda
from runner.system.packages import dist_versions

# its OpenAI-compatible server (no runner import), and what it logs once its cache is allocated (its startup_line)
SERVER_SCRIPT = Path(__file__).with_name("workers") / "exl2_server.py"
SERVER_CACHE_LINE = re.compile(r"exl2 server: .* KV cache of (\d+) tokens")
PAGE = 256  # ExLlamaV2's paged-attention page: a dynamic generator's cache and sequences are multiples of it
GIB = 2**30
SPLIT_HEADROOM = 1.05  # a card's share of the weights, plus 5 % for the modules that do not divide evenly
FIXED_GIB = 0.5  # per card, in ExLlamaV2's split: the rope tables and the hidden-state/attention buffers


def round_to_page(tokens: int) -> int:
    return -(-int(tokens) // PAGE) * PAGE


def cache_length(context_tokens: Optional[int], model_max: int) -> int:
    """Tokens of the offline engine's cache: the longest sequence asked for, rounded up to a page, at most the
    model's max_seq_len (the whole of it only where the length is not known: lm-eval tasks)."""
    if not context_tokens:
        return int(model_max)
    return min(round_to_page(context_tokens), int(model_max))


def weight_bytes(folder) -> int:
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


def gpu_split_gib(weights: int, n_gpus: int, card_bytes: Optional[int], utilization: float = 1.0) -> List[float]:
    """ExLlamaV2's gpu_split (GiB of weights and fixed buffers per card, filled in order) for an even split over
    n_gpus cards: each card but the last takes its share plus headroom; the last may take up to its whole budget
    (card_bytes x utilization; 1024 GiB where the profile gives no card size), so rounding never fails the load."""
    n = max(int(n_gpus or 1), 1)
    budget = card_bytes * utilization / GIB if card_bytes else 1024.0
    share = weights / n / GIB * SPLIT_HEADROOM + FIXED_GIB
    return [round(min(share, budget), 2)] * (n - 1) + [round(budget, 2)]


def profile_split(folder, hardware) -> List[float]:
    return gpu_split_gib(
        weight_bytes(folder),
        getattr(hardware, "n_gpus", 1) or 1,
        getattr(hardware, "gpu_memory_bytes", None),
        float(getattr(hardware, "gpu_memory_utilization", None) or 1.0),
    )


class ExLlamaV2Loaded(LoadedModel):
    engine = "exllamav2"

    def __init__(self, path, hardware=None, context_tokens: Optional[int] = None):
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config

        config = ExLlamaV2Config(str(path))
        config.arch_compat_overrides()
        self.model = ExLlamaV2(config)
        self.gpu_split = profile_split(path, hardware)
        self.model.load(gpu_split=self.gpu_split)  # the profile's cards only, in device order
        self.kv_cache_tokens = cache_length(context_tokens, config.max_seq_len)
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=self.kv_cache_tokens)  # after the load: its layers' cards
        self.sync = _sync_all_gpus

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            self.cache.current_seq_len = 0
            logits = self.model.forward(torch.tensor([list(input_ids)], dtype=torch.long), self.cache)[0]
            return torch.log_softmax(logits.float(), dim=-1).cpu().numpy()

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        import torch

        with torch.inference_mode():
            self.cache.current_seq_len = 0
            ids = torch.tensor([list(prompt_ids)], dtype=torch.long)
            self.sync()
            start = time.perf_counter()
            logits = self.model.forward(ids, self.cache, last_id_only=True)
            token = logits[0, -1].argmax().view(1, 1).cpu()  # the next forward takes its ids on the CPU
            self.sync()
            ttft = time.perf_counter() - start
            for _ in range(new_tokens - 1):
                token = self.model.forward(token, self.cache)[0, -1].argmax().view(1, 1).cpu()
            self.sync()
            return GenerationTiming(ttft_s=ttft, total_s=time.perf_counter() - start, new_tokens=new_tokens)

    def close(self) -> None:
        import torch

        self.model.unload()
        del self.model, self.cache
        torch.cuda.empty_cache()


def reported_cache_tokens(log_text: str) -> Optional[int]:
    """The EXL2 server's KV cache in tokens, from its log (None where it did not get that far)."""
    found = SERVER_CACHE_LINE.findall(log_text)
    return int(found[-1]) if found else None


def _sync_all_gpus() -> None:
    """Layers split over several GPUs (gpu_split) run on each of them: wait for all."""
    import torch

    for i in range(torch.cuda.device_count()):
        torch.cuda.synchronize(i)


class ExLlamaV2Engine(Engine):
    NAME = "exllamav2"

    def version(self) -> str:
        return dist_versions("exllamav2")

    def check_available(self, hardware) -> None:
        require_cuda("format.engine", "the exllamav2 engine", "exllamav2", "exl2", hardware)

    def load(self, artifact, model, hardware, context_tokens: Optional[int] = None) -> ExLlamaV2Loaded:
        self.check_available(hardware)
        return ExLlamaV2Loaded(artifact.path, hardware, context_tokens)
