"""What every engine provides: load an artifact, give log-probs for a window, time a generation."""
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np


@dataclass
class GenerationTiming:
    ttft_s: float  # request start -> first new token (prefill + first sampling step)
    total_s: float  # request start -> last new token
    new_tokens: int


class LoadedModel:
    engine: str

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        """Log-softmax over the vocabulary at every position: float32 [len(input_ids), vocab]."""
        raise NotImplementedError

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        """Greedy decoding of exactly new_tokens tokens after the prompt, timed."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class Engine:
    NAME: str

    def check_available(self, hardware) -> None:
        """Raise UserError when this machine cannot run the engine (e.g. needs a GPU)."""

    def load(self, artifact, model, hardware) -> LoadedModel:
        raise NotImplementedError
