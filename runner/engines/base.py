"""What every engine provides: load an artifact, give log-probs for a window, time a generation."""

from dataclasses import dataclass
from typing import Callable, Generator, Iterable, List, Optional, Sequence

import numpy as np

from runner.system.packages import dist_versions  # noqa: F401  (re-exported: engines and stages import it from here)


@dataclass
class GenerationTiming:
    ttft_s: float  # request start -> first new token (prefill + first sampling step)
    total_s: float  # request start -> last new token
    new_tokens: int


def no_sync() -> None:
    pass


class LoadedModel:
    engine: str
    # Called at every timing boundary of generate() (request start, first token, last token) so the clock
    # reads finished device work: CUDA kernels run asynchronously. A CUDA engine sets torch.cuda.synchronize.
    sync: Callable[[], None] = staticmethod(no_sync)
    kv_cache_tokens: Optional[int] = None  # the KV cache the engine reports having allocated (vLLM), set by close()

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        """Log-softmax over the vocabulary at every position: float32 [len(input_ids), vocab]."""
        raise NotImplementedError

    def logprobs_many(self, windows: Iterable[Sequence[int]]) -> Generator[np.ndarray, None, None]:
        """logprobs of each window, in order; an engine may score several at once (close() stops it early)."""
        return (self.logprobs(ids) for ids in windows)

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        """Greedy decoding of exactly new_tokens tokens after the prompt, timed."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Engine:
    NAME: str
    LOGPROBS_TOP_K: Optional[int] = None  # log-probs per position the engine returns; None: the whole vocabulary

    def check_available(self, hardware) -> None:
        """Raise UserError when this machine cannot run the engine (e.g. needs a GPU)."""

    def check_format(self, fmt, hardware) -> None:
        """Raise UserError, before any work, for settings of a format it runs that this engine refuses here."""

    def check_artifact(self, artifact) -> None:
        """Cheap checks of the files (UserError if unusable); load() runs them unless artifact.checked is set."""

    def load(self, artifact, model, hardware, context_tokens: Optional[int] = None) -> LoadedModel:
        """context_tokens: the longest sequence (prompt + generated tokens) this load will be asked for; an engine
        that sizes its context or KV cache up front (vLLM's max_model_len, ExLlamaV2's cache) sizes it to that,
        not to the model's own limit. None: not known (lm-eval tasks)."""
        raise NotImplementedError

    def kernel(self, artifact, hardware) -> Optional[str]:
        """The compute kernel that runs `artifact` on this machine, read at run time where it loads (never from the
        manifest: a cached artifact may have been quantized on another CPU); None where the engine does not say."""
        return None

    def version(self) -> str:
        """The installed library versions behind this engine, e.g. 'llama-cpp-python 0.3.36'."""
        raise NotImplementedError
