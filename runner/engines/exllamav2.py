"""ExLlamaV2 engine: runs EXL2 folders on CUDA. exllamav2 is imported only after the CUDA check
(at import it compiles or loads its CUDA extension, and raises OSError without CUDA_HOME).

Eval: one forward of the window with a fresh cache gives fp16 logits for every position; log-softmax
in float32 over the full vocabulary, so ppl/KLD/top-1 are computed exactly as for the torch engine.
Generation: prefill the prompt into the KV cache, then greedy decoding one token per forward.
"""

import time
from typing import List, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.system.gpu import require_cuda
from runner.system.packages import dist_versions


class ExLlamaV2Loaded(LoadedModel):
    engine = "exllamav2"

    def __init__(self, path):
        from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config

        config = ExLlamaV2Config(str(path))
        config.arch_compat_overrides()
        self.model = ExLlamaV2(config)
        self.cache = ExLlamaV2Cache(self.model, max_seq_len=config.max_seq_len, lazy=True)
        self.model.load_autosplit(self.cache)  # fills GPU 0, then the next ones (hardware.n_gpus > 1)
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


def _sync_all_gpus() -> None:
    """A layer split over several GPUs (load_autosplit) runs on each of them: wait for all."""
    import torch

    for i in range(torch.cuda.device_count()):
        torch.cuda.synchronize(i)


class ExLlamaV2Engine(Engine):
    NAME = "exllamav2"

    def version(self) -> str:
        return dist_versions("exllamav2")

    def check_available(self, hardware) -> None:
        require_cuda("format.engine", "the exllamav2 engine", "exllamav2", "exl2", hardware)

    def load(self, artifact, model, hardware) -> ExLlamaV2Loaded:
        self.check_available(hardware)
        return ExLlamaV2Loaded(artifact.path)
