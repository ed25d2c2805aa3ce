"""Which tokenizer makes the eval stream, and whether its windows start with BOS.

A base model that came from a GGUF is scored on the ids llama.cpp's own tokenizer gives for that
file: the HF tokenizer transformers rebuilds from GGUF metadata can differ (seen: a vocab with no
merges, one token per character). Every job compares the two id for id on the part of the text the
stream covers (a fixed short sample missed a real difference: SmolLM2's GGUF differs at token 42 872).
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from runner.errors import UserError

log = logging.getLogger(__name__)
SAMPLE_CHARS = 4000  # at least this much text is compared; more when the stream covers more
MIN_CHARS_PER_TOKEN = 1.5  # below this the ids are (nearly) characters: no real model's tokenizer works so


@dataclass
class StreamTokenizer:
    name: str  # "hf" | "llama_cpp"
    encode: Callable[[str], List[int]]  # text -> ids, no special tokens
    bos_id: Optional[int]
    chars_per_token: float = 0.0  # on the sample that was checked
    close: Callable[[], None] = lambda: None  # frees llama.cpp's vocab (its __del__ fails at interpreter exit)


def hf_tokenizer(tokenizer) -> StreamTokenizer:
    return StreamTokenizer(
        "hf", lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"]), tokenizer.bos_token_id
    )


def llama_cpp_tokenizer(gguf: Path) -> StreamTokenizer:
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise UserError(
            "model.id",
            f"the model comes from {gguf.name}, and checking its tokenizer needs llama-cpp-python",
            "pip install -e '.[gguf]' (make venv installs it)",
        ) from e
    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    bos = vocab.token_bos()
    return StreamTokenizer(
        "llama_cpp",
        lambda text: vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False),
        bos if bos >= 0 else None,
        close=vocab.close,
    )


def _llama_cpp_adds_bos(gguf: Path) -> bool:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    try:
        return bool(vocab._model.add_bos_token())  # llama_vocab_get_add_bos: what llama.cpp does with this file
    finally:
        vocab.close()


def first_difference(a: List[int], b: List[int]) -> Optional[int]:
    """Index of the first id where the two lists differ (a shorter list differs where it ends); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def stream_sample(text: str, tokenizer: StreamTokenizer, n_tokens: int) -> str:
    """The start of `text` that holds about n_tokens tokens (20 % spare), at least SAMPLE_CHARS characters."""
    probe = text[:SAMPLE_CHARS]
    chars_per_token = len(probe) / max(len(tokenizer.encode(probe)), 1)
    return text[: max(SAMPLE_CHARS, int(1.2 * n_tokens * chars_per_token))]


def choose_tokenizer(hf: StreamTokenizer, gguf: Optional[Path], sample: str, model_label: str) -> StreamTokenizer:
    """The HF tokenizer, unless the model came from a GGUF whose llama.cpp tokenizer disagrees on the sample."""
    chosen = hf
    if gguf is not None:
        own = llama_cpp_tokenizer(gguf)
        at = first_difference(hf.encode(sample), own.encode(sample))
        if at is not None:
            log.warning(
                "model.id %s: the HF tokenizer rebuilt from %s differs from llama.cpp's at token %d of a "
                "%d-character sample; the eval stream uses llama.cpp's tokenizer (the model's own)",
                model_label,
                gguf.name,
                at,
                len(sample),
            )
            chosen = own
        else:
            own.close()
    chosen.chars_per_token = len(sample) / max(len(chosen.encode(sample)), 1)
    if chosen.chars_per_token < MIN_CHARS_PER_TOKEN:
        log.warning(
            "model.id %s: the eval stream has %.2f characters per token (%s tokenizer): character-level "
            "tokenization is implausible for a real model, so its perplexities mean little",
            model_label,
            chosen.chars_per_token,
            chosen.name,
        )
    return chosen


def resolve_add_bos(requested: Optional[bool], tokenizer, gguf: Optional[Path]) -> Tuple[bool, str]:
    """(add BOS?, where that came from): eval.add_bos when set, else the GGUF's metadata, else the tokenizer's habit."""
    if requested is not None:
        return bool(requested), "config"
    if gguf is not None:
        from runner.formats.gguf.files import read_header

        flag = read_header(gguf).metadata.get("tokenizer.ggml.add_bos_token")
        if flag is None:  # not recorded: llama.cpp's default for this vocab type (true for SentencePiece)
            flag = _llama_cpp_adds_bos(gguf)
        return bool(flag), "gguf"
    # what encoding does, not the add_bos_token attribute: in transformers 5 a reloaded tokenizer can report
    # add_bos_token=False while its tokenizer.json post-processor prepends BOS
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id, "tokenizer"
