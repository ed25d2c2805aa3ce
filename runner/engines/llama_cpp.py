"""llama.cpp engine (llama-cpp-python): runs a .gguf file exactly as stock llama.cpp would."""
import logging
import time
from typing import List, Optional, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.errors import UserError
from runner.formats.gguf_files import check_gguf

log = logging.getLogger(__name__)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


class LlamaCppLoaded(LoadedModel):
    engine = "llama_cpp"

    def __init__(self, path: str, hardware, n_ctx: int = 2048):
        self.path, self.hardware = path, hardware
        self._bench = self._open(n_ctx, logits_all=False)
        self._eval: Optional[object] = None

    def _open(self, n_ctx: int, logits_all: bool):
        from llama_cpp import Llama

        threads = self.hardware.threads
        return Llama(model_path=self.path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512), n_threads=threads,
                     n_threads_batch=threads, n_gpu_layers=self.hardware.n_gpu_layers, logits_all=logits_all,
                     seed=0, verbose=False)

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        n = len(input_ids)
        if self._eval is None or self._eval.n_ctx() < n:  # a second context on the same mmapped weights
            self._eval = self._open(max(n, 512), logits_all=True)
        self._eval.reset()
        self._eval.eval(list(map(int, input_ids)))
        return _log_softmax(np.array(self._eval.scores[:n], dtype=np.float32))

    def _last_logits(self, llm) -> np.ndarray:
        import llama_cpp

        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        need = len(prompt_ids) + new_tokens
        if self._bench.n_ctx() < need:
            self._bench = self._open(need, logits_all=False)
        llm = self._bench
        llm.reset()
        start = time.perf_counter()
        llm.eval(list(map(int, prompt_ids)))
        token = int(np.argmax(self._last_logits(llm)))
        ttft = time.perf_counter() - start
        for _ in range(new_tokens - 1):
            llm.eval([token])
            token = int(np.argmax(self._last_logits(llm)))
        return GenerationTiming(ttft_s=ttft, total_s=time.perf_counter() - start, new_tokens=new_tokens)

    def close(self) -> None:
        for llm in (self._bench, self._eval):
            if llm is not None:
                llm.close()
        self._bench = self._eval = None


class LlamaCppEngine(Engine):
    NAME = "llama_cpp"

    def check_available(self, hardware) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise UserError("format.engine", "the llama_cpp engine needs llama-cpp-python",
                            "pip install -e '.[gguf]' (make venv installs it)") from e
        if (hardware.device.startswith("cuda") or hardware.n_gpu_layers) and not llama_cpp.llama_supports_gpu_offload():
            raise UserError("hardware.n_gpu_layers", "this llama-cpp-python build cannot offload to a GPU",
                            "use hardware=cpu, or reinstall it with CMAKE_ARGS=-DGGML_CUDA=on on a CUDA machine")

    def load(self, artifact, model, hardware) -> LlamaCppLoaded:
        path = artifact.path / artifact.manifest["weight_files"][0]
        check_gguf(path, "cache.dir")  # a corrupt cache entry is named, not a crash inside llama.cpp
        return LlamaCppLoaded(str(path), hardware)
