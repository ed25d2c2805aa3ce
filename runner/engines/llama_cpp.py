"""llama.cpp engine (llama-cpp-python's bindings): runs a .gguf file exactly as stock llama.cpp would.

Model and contexts are made through llama.cpp's C API from its own defaults (llama_model_default_params,
llama_context_default_params), the ones llama-cli, llama-server and llama-perplexity start from. The
`Llama` class of llama-cpp-python is not used here: it overrides some of those defaults (flash attention
forced off, where llama.cpp's default is auto, i.e. on for a CPU; explicit YaRN factors where llama.cpp reads
the model's), so its speeds and log-probs are not the ones a llama.cpp deployment gets.
"""

import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.errors import UserError
from runner.system.library_logs import FLASH_ATTENTION_RESOLVED, route_llama_cpp_log
from runner.system.packages import dist_versions

log = logging.getLogger(__name__)


_SOFTMAX_ROWS = 64  # rows per chunk: the exp() scratch stays ~12 MB on a 49k vocabulary


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Log-softmax of each row of a float32 [n, V] matrix (read-only, e.g. llama.cpp's own logits buffer)
    into one new float32 array: vectorized in chunks of rows, so besides the result only a small scratch
    buffer is allocated, whatever n is."""
    out = np.empty(logits.shape, dtype=np.float32)
    scratch = np.empty((min(_SOFTMAX_ROWS, len(logits)), logits.shape[1]), dtype=np.float32)
    for lo in range(0, len(logits), _SOFTMAX_ROWS):
        rows = out[lo : lo + _SOFTMAX_ROWS]
        tmp = scratch[: len(rows)]
        np.subtract(
            logits[lo : lo + _SOFTMAX_ROWS], logits[lo : lo + _SOFTMAX_ROWS].max(axis=1, keepdims=True), out=rows
        )
        np.exp(rows, out=tmp)
        rows -= np.log(tmp.sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    return out


def weight_repacking() -> bool:
    """Whether llama.cpp may repack weights into its extra CPU buffer types, as its defaults do -- except where this
    ggml build runs AMX: its AMX buffer's mul_mat segfaults on the first decode there (seen on AMX Xeons with Q8_0,
    an open upstream bug), so the weights stay in the plain CPU buffer. Read from ggml itself at run time: the build
    and the CPU decide, not the machine the code was written on."""
    import llama_cpp as lc

    return b"AMX_INT8 = 1" not in lc.llama_print_system_info()


# The same rule for a process that builds llama-cpp-python's `Llama` itself (the serving benchmark's server, a user's
# script): llama_cpp.Llama reads its model params from llama_cpp.llama_cpp.llama_model_default_params, which this
# code, run first, makes return use_extra_bufts = False where ggml runs AMX.
NO_AMX_REPACK_PRELUDE = (
    "import llama_cpp.llama_cpp as _lc\n"
    "if b'AMX_INT8 = 1' in _lc.llama_print_system_info():\n"
    "    _defaults = _lc.llama_model_default_params\n"
    "    def _no_repack():\n"
    "        p = _defaults(); p.use_extra_bufts = False; return p\n"
    "    _lc.llama_model_default_params = _no_repack\n"
)


def load_model(path: str, hardware):
    """llama_model_load_from_file with llama.cpp's default model params (mmap, ...) and the job's GPU layers."""
    import llama_cpp as lc

    route_llama_cpp_log()  # the loader's lines to the job log
    lc.llama_backend_init()
    params = lc.llama_model_default_params()
    params.n_gpu_layers = hardware.n_gpu_layers
    params.use_extra_bufts = weight_repacking()
    model = lc.llama_model_load_from_file(path.encode(), params)
    if not model:
        raise UserError(
            "cache.dir",
            f"llama.cpp could not load {path} (its log is in the job log)",
            "delete that cache entry (qrun-cache) and rerun",
        )
    return model


class Context:
    """A llama_context from llama.cpp's defaults; only its size and threads are ours."""

    def __init__(self, model, n_ctx: int, threads: int):
        import llama_cpp as lc

        params = lc.llama_context_default_params()
        params.n_ctx = params.n_batch = n_ctx
        params.n_ubatch = min(n_ctx, 512)
        params.n_threads = params.n_threads_batch = threads
        seen = len(FLASH_ATTENTION_RESOLVED)
        self.ptr = lc.llama_init_from_model(model, params)
        if not self.ptr:
            raise RuntimeError(f"llama_init_from_model failed for n_ctx={n_ctx}")
        self.n_ctx = n_ctx
        # llama.cpp resolves flash attention 'auto' while it builds the context and only says so in its log
        resolved = FLASH_ATTENTION_RESOLVED[seen:]
        self.flash_attn: Optional[str] = resolved[-1] if resolved else None

    def clear(self) -> None:
        import llama_cpp as lc

        lc.llama_memory_clear(lc.llama_get_memory(self.ptr), True)

    def decode(self, batch) -> None:
        import llama_cpp as lc

        rc = lc.llama_decode(self.ptr, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def free(self) -> None:
        import llama_cpp as lc

        if self.ptr:
            lc.llama_free(self.ptr)
            self.ptr = None


class LlamaCppLoaded(LoadedModel):
    engine = "llama_cpp"

    def __init__(self, path: str, hardware, n_ctx: int = 512):
        import llama_cpp as lc

        self.path, self.threads = path, hardware.threads
        self._model = load_model(path, hardware)
        self.n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self._model))
        self._bench: Optional[Context] = Context(self._model, n_ctx, self.threads)
        self._eval: Optional[Context] = None
        self._sampler = None

    @property
    def flash_attn(self) -> Optional[str]:
        """'enabled'/'disabled' as llama.cpp resolved its default (auto) for this model on this machine."""
        return self._bench.flash_attn if self._bench else None

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        """One llama_decode of the window with an output at every position (every token may be scored); the
        log-softmax reads llama.cpp's logits buffer in place."""
        import llama_cpp as lc

        n = len(input_ids)
        if self._eval is None or self._eval.n_ctx < n:  # a second context on the same mmapped weights
            if self._eval is not None:
                self._eval.free()
            self._eval = Context(self._model, max(n, 512), self.threads)
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            for i, token in enumerate(input_ids):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = int(token), i, 1, 1
                batch.seq_id[i][0] = 0
            batch.n_tokens = n
            self._eval.clear()
            self._eval.decode(batch)
        finally:
            lc.llama_batch_free(batch)
        logits = np.ctypeslib.as_array(lc.llama_get_logits(self._eval.ptr), shape=(n, self.n_vocab))
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
        copied out, no numpy in the timed path. TTFT = prompt decode + first sample."""
        import llama_cpp as lc

        need = len(prompt_ids) + new_tokens
        if self._bench.n_ctx != need:  # a context of exactly the request, as llama-bench sizes it: decode over a
            self._bench.free()  # larger KV cache is slower (2048 vs 320 cells: -13 % on SmolLM2, 2 threads)
            self._bench = Context(self._model, need, self.threads)
        ctx, sampler = self._bench, self._greedy_sampler()
        ctx.clear()
        prompt = (lc.llama_token * len(prompt_ids))(*map(int, prompt_ids))
        token = (lc.llama_token * 1)()
        next_batch = lc.llama_batch_get_one(token, 1)  # points at `token`: refilled in place
        start = time.perf_counter()
        ctx.decode(lc.llama_batch_get_one(prompt, len(prompt_ids)))
        token[0] = lc.llama_sampler_sample(sampler, ctx.ptr, -1)  # reads the logits: waits for a GPU backend too
        ttft = time.perf_counter() - start
        for _ in range(new_tokens - 1):
            ctx.decode(next_batch)
            token[0] = lc.llama_sampler_sample(sampler, ctx.ptr, -1)
        return GenerationTiming(ttft_s=ttft, total_s=time.perf_counter() - start, new_tokens=new_tokens)

    def close(self) -> None:
        import llama_cpp as lc

        if self._sampler is not None:
            lc.llama_sampler_free(self._sampler)
        for ctx in (self._bench, self._eval):
            if ctx is not None:
                ctx.free()
        if self._model:
            lc.llama_model_free(self._model)
        self._bench = self._eval = self._sampler = self._model = None


class LlamaCppEngine(Engine):
    NAME = "llama_cpp"

    def version(self) -> str:
        return dist_versions("llama-cpp-python")

    def check_available(self, hardware) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise UserError(
                "format.engine",
                "the llama_cpp engine needs llama-cpp-python",
                "pip install -e '.[gguf]' (make venv installs it)",
            ) from e
        if (hardware.device.startswith("cuda") or hardware.n_gpu_layers) and not llama_cpp.llama_supports_gpu_offload():
            raise UserError(
                "hardware.n_gpu_layers",
                "this llama-cpp-python build cannot offload to a GPU",
                "use hardware=cpu, or reinstall it with CMAKE_ARGS=-DGGML_CUDA=on on a CUDA machine",
            )

    def check_artifact(self, artifact) -> None:
        # imported here: runner.formats imports torch, which a llama.cpp benchmark process must not load
        from runner.formats.gguf.files import check_gguf

        path = _gguf_path(artifact)
        check_gguf(path, "cache.dir")  # a corrupt cache entry is named, not a crash inside llama.cpp

    def kernel(self, artifact, hardware) -> Optional[str]:
        flash = (
            f"flash attention {self.flash_attention(artifact, hardware) or 'unreported'} (llama.cpp's default: auto)"
        )
        return flash if weight_repacking() else flash + "; weight repacking off (llama.cpp's AMX buffer crashes here)"

    def flash_attention(self, artifact, hardware) -> Optional[str]:
        """How llama.cpp resolves its default flash attention (auto) for `artifact` on this machine."""
        loaded = self.load(artifact, None, hardware)
        try:
            return loaded.flash_attn
        finally:
            loaded.close()

    def load(self, artifact, model, hardware, context_tokens: Optional[int] = None) -> LlamaCppLoaded:
        if not getattr(artifact, "checked", False):
            self.check_artifact(artifact)
        return LlamaCppLoaded(str(_gguf_path(artifact)), hardware)


def _gguf_path(artifact) -> Path:
    path = Path(artifact.path) / artifact.manifest["weight_files"][0]
    if path.suffix != ".gguf":
        raise UserError(
            "format.engine",
            f"llama_cpp runs GGUF files, and format {artifact.manifest['format']} stores {path.name}",
            "use a gguf_* format, or format.engine=torch for this one",
        )
    return path
