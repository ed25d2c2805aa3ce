"""llama.cpp engine (llama-cpp-python): runs a .gguf file exactly as stock llama.cpp would."""
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.errors import UserError
from runner.library_logs import route_llama_cpp_log
from runner.packages import dist_versions

log = logging.getLogger(__name__)


_SOFTMAX_ROWS = 64  # rows per chunk: the exp() scratch stays ~12 MB on a 49k vocabulary


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Log-softmax of each row of a float32 [n, V] matrix (read-only, e.g. llama.cpp's own logits buffer)
    into one new float32 array: vectorized in chunks of rows, so besides the result only a small scratch
    buffer is allocated, whatever n is."""
    out = np.empty(logits.shape, dtype=np.float32)
    scratch = np.empty((min(_SOFTMAX_ROWS, len(logits)), logits.shape[1]), dtype=np.float32)
    for lo in range(0, len(logits), _SOFTMAX_ROWS):
        rows = out[lo:lo + _SOFTMAX_ROWS]
        tmp = scratch[:len(rows)]
        np.subtract(logits[lo:lo + _SOFTMAX_ROWS], logits[lo:lo + _SOFTMAX_ROWS].max(axis=1, keepdims=True), out=rows)
        np.exp(rows, out=tmp)
        rows -= np.log(tmp.sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return out


class LlamaCppLoaded(LoadedModel):
    engine = "llama_cpp"

    def __init__(self, path: str, hardware, n_ctx: int = 512):
        self.path, self.hardware = path, hardware
        self._bench, self._bench_n_ctx = self._open(n_ctx, logits_all=False), n_ctx
        self._eval: Optional[object] = None
        self._sampler = None

    def _open(self, n_ctx: int, logits_all: bool):
        from llama_cpp import Llama

        route_llama_cpp_log()  # the loader's lines (verbose=False does not silence all of them) to the job log

        threads = self.hardware.threads
        return Llama(model_path=self.path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=min(n_ctx, 512), n_threads=threads,
                     n_threads_batch=threads, n_gpu_layers=self.hardware.n_gpu_layers, logits_all=logits_all,
                     seed=0, verbose=False)

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        """One llama_decode of the window with an output at every position (every token may be scored); the
        log-softmax reads llama.cpp's logits buffer in place (no copy through Llama.eval's `scores`)."""
        import llama_cpp as lc

        n = len(input_ids)
        if self._eval is None or self._eval.n_ctx() < n:  # a second context on the same mmapped weights
            if self._eval is not None:
                self._eval.close()
            self._eval = self._open(max(n, 512), logits_all=False)
        ctx = self._eval.ctx
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            for i, token in enumerate(input_ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = int(token), i, 1, 1
                batch.seq_id[i][0] = 0
            batch.n_tokens = n
            lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
            _decode(ctx, batch)
        finally:
            lc.llama_batch_free(batch)
        logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(n, self._eval.n_vocab()))
        return log_softmax_rows(logits)

    def _greedy_sampler(self):
        import llama_cpp as lc

        if self._sampler is None:
            self._sampler = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
            lc.llama_sampler_chain_add(self._sampler, lc.llama_sampler_init_greedy())
        return self._sampler

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        """Greedy decoding as llama.cpp runs it: llama_decode of the prompt, then one 1-token llama_decode per
        new token, the token picked by llama.cpp's own greedy sampler. Python only hands the id on: no logits
        copied out, no numpy, no Llama.eval bookkeeping in the timed path. TTFT = prompt decode + first sample."""
        import llama_cpp as lc

        need = len(prompt_ids) + new_tokens
        if self._bench_n_ctx != need:  # a context of exactly the request, as llama-bench sizes it: decode over a
            self._bench.close()  # larger KV cache is slower (2048 vs 320 cells: -13 % on SmolLM2, 2 threads)
            self._bench, self._bench_n_ctx = self._open(need, logits_all=False), need
        ctx, sampler = self._bench.ctx, self._greedy_sampler()
        lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
        prompt = (lc.llama_token * len(prompt_ids))(*map(int, prompt_ids))
        token = (lc.llama_token * 1)()
        next_batch = lc.llama_batch_get_one(token, 1)  # points at `token`: refilled in place
        start = time.perf_counter()
        _decode(ctx, lc.llama_batch_get_one(prompt, len(prompt_ids)))
        token[0] = lc.llama_sampler_sample(sampler, ctx, -1)  # reads the logits: waits for a GPU backend too
        ttft = time.perf_counter() - start
        for _ in range(new_tokens - 1):
            _decode(ctx, next_batch)
            token[0] = lc.llama_sampler_sample(sampler, ctx, -1)
        return GenerationTiming(ttft_s=ttft, total_s=time.perf_counter() - start, new_tokens=new_tokens)

    def close(self) -> None:
        import llama_cpp as lc

        if self._sampler is not None:
            lc.llama_sampler_free(self._sampler)
        for llm in (self._bench, self._eval):
            if llm is not None:
                llm.close()
        self._bench = self._eval = self._sampler = None


def _decode(ctx, batch) -> None:
    import llama_cpp as lc

    rc = lc.llama_decode(ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode returned {rc}")


class LlamaCppEngine(Engine):
    NAME = "llama_cpp"

    def version(self) -> str:
        return dist_versions("llama-cpp-python")

    def check_available(self, hardware) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise UserError("format.engine", "the llama_cpp engine needs llama-cpp-python",
                            "pip install -e '.[gguf]' (make venv installs it)") from e
        if (hardware.device.startswith("cuda") or hardware.n_gpu_layers) and not llama_cpp.llama_supports_gpu_offload():
            raise UserError("hardware.n_gpu_layers", "this llama-cpp-python build cannot offload to a GPU",
                            "use hardware=cpu, or reinstall it with CMAKE_ARGS=-DGGML_CUDA=on on a CUDA machine")

    def check_artifact(self, artifact) -> None:
        # imported here: runner.formats imports torch, which a llama.cpp benchmark process must not load
        from runner.formats.gguf_files import check_gguf

        path = _gguf_path(artifact)
        check_gguf(path, "cache.dir")  # a corrupt cache entry is named, not a crash inside llama.cpp

    def load(self, artifact, model, hardware) -> LlamaCppLoaded:
        if not getattr(artifact, "checked", False):
            self.check_artifact(artifact)
        return LlamaCppLoaded(str(_gguf_path(artifact)), hardware)


def _gguf_path(artifact) -> Path:
    path = Path(artifact.path) / artifact.manifest["weight_files"][0]
    if path.suffix != ".gguf":
        raise UserError("format.engine", f"llama_cpp runs GGUF files, and format {artifact.manifest['format']} "
                        f"stores {path.name}", "use a gguf_* format, or format.engine=torch for this one")
    return path
