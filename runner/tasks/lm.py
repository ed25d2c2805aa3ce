"""lm-eval's LM interface over the runner's engine API: every engine scores tasks on the same ids.

Scoring goes through LoadedModel.logprobs (full-vocabulary log-softmax per position), so the torch,
llama.cpp, vLLM and ExLlamaV2 engines answer the same requests the same way. Tokenization is the base
model's own (task_tokenizer), whatever the artifact: every format of a model scores the same token ids,
so their answers can be compared item by item (flips). Request
splitting (context/continuation, trailing spaces, empty context) is lm-eval's TemplateLM, as for its
`hf` model. Every answer is appended to an ItemStore as it is made, so an interrupted task resumes.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

MAX_LENGTH = 2048  # tokens a request may use (left-truncated beyond, as lm-eval's hf does)


@dataclass
class TaskTokenizer:
    name: str  # "hf" | "llama_cpp"
    encode: Callable[[str], List[int]]  # no special tokens
    decode: Callable[[List[int]], str]
    bos_id: Optional[int]
    eos_id: Optional[int]
    add_bos: bool  # prepend BOS to a context, as the model does
    close: Callable[[], None] = lambda: None


# in the answers' cache key: which ids a task's requests get; changes when that rule does
TOKENIZATION = "the base model's tokenizer for every artifact"


def _source_gguf(model) -> Optional[Path]:
    source = getattr(model, "source_gguf", None)
    return source if source is not None and source.is_file() else None


def task_tokenizer(model, add_bos_setting: Optional[bool]) -> TaskTokenizer:
    """The base model's own tokenizer, the same for every artifact of it: llama.cpp's of the GGUF the base model came
    from (with that file's BOS rule), else the base model's HF tokenizer (with its BOS habit). A GGUF artifact made
    from an HF model gets the HF tokenizer's ids too, handed to llama.cpp as ids: llama.cpp's tokenizer of the
    converted file and the HF one can split the same text differently (on SmolLM2 they do, at a blank line), and
    then the formats would answer different requests and their answers could not be compared item by item."""
    from runner.data.tokenization import resolve_add_bos

    own_gguf = _source_gguf(model)
    if own_gguf is not None:
        from llama_cpp import Llama

        vocab = Llama(model_path=str(own_gguf), vocab_only=True, verbose=False)
        bos, eos = vocab.token_bos(), vocab.token_eos()
        add_bos, _ = resolve_add_bos(add_bos_setting, None, own_gguf)
        return TaskTokenizer(
            "llama_cpp",
            lambda s: vocab.tokenize(s.encode("utf-8"), add_bos=False, special=False),
            lambda ids: vocab.detokenize(list(ids)).decode("utf-8", errors="replace"),
            bos if bos >= 0 else None,
            eos if eos >= 0 else None,
            add_bos and bos >= 0,
            vocab.close,
        )
    tok = model.load_tokenizer()
    add_bos, _ = resolve_add_bos(add_bos_setting, tok, None)
    return TaskTokenizer(
        "hf",
        lambda s: list(tok(s, add_special_tokens=False)["input_ids"]),
        lambda ids: tok.decode(list(ids), skip_special_tokens=True),
        tok.bos_token_id,
        tok.eos_token_id,
        add_bos and tok.bos_token_id is not None,
    )


class ItemStore:
    """Per-request answers of one (artifact, task, limit, lm-eval) run, one JSON line each, appended as made."""

    def __init__(self, path: Optional[Path]):
        self.path, self.answers = path, {}
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    key, value = json.loads(line)
                    self.answers[key] = value
                except ValueError:  # the last line of a killed run may be cut short
                    break
        self.resumed = len(self.answers)
        self._file = None

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha1(json.dumps(parts).encode()).hexdigest()

    def get(self, key: str):
        return self.answers.get(key)

    def put(self, key: str, value) -> None:
        self.answers[key] = value
        if self.path is None:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps([key, value]) + "\n")
        self._file.flush()  # in the OS's hands: survives the process being killed

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class EngineLM(TemplateLM):
    """lm-eval LM over a LoadedModel (runner/engines/base.py); greedy generation by repeated scoring."""

    def __init__(
        self, loaded, tokenizer: TaskTokenizer, store: Optional[ItemStore] = None, max_length: int = MAX_LENGTH
    ):
        super().__init__()
        self.loaded, self.tok, self.max_length = loaded, tokenizer, max_length
        self.store = store or ItemStore(None)

    @property
    def eot_token_id(self) -> int:
        return self.tok.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tok.bos_id if self.tok.bos_id is not None else self.tok.eos_id

    @property
    def tokenizer_name(self) -> str:
        return self.tok.name

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> List[int]:
        ids = self.tok.encode(string)
        bos = self.tok.add_bos if add_special_tokens is None else add_special_tokens
        return [self.tok.bos_id] + ids if bos and self.tok.bos_id is not None else ids

    def _score(self, context: List[int], continuation: List[int]):
        """(sum of log-probs of continuation after context, whether greedy decoding gives exactly it)."""
        if not continuation:
            return 0.0, True
        key = ItemStore.key("ll", context, continuation)
        hit = self.store.get(key)
        if hit is not None:
            return hit[0], bool(hit[1])
        whole = (context + continuation)[-(self.max_length + 1) :]
        lp = self.loaded.logprobs(whole[:-1])[-len(continuation) :]
        target = np.asarray(continuation)
        value = float(lp[np.arange(len(target)), target].sum()), bool((lp.argmax(axis=-1) == target).all())
        self.store.put(key, list(value))
        return value

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        return [
            self._score(list(ctx), list(cont))
            for _, ctx, cont in tqdm(requests, desc="loglikelihood", disable=disable_tqdm, unit="req")
        ]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        out = []
        for (string,) in tqdm([r.args for r in requests], desc="loglikelihood_rolling", disable=disable_tqdm):
            windows = map(
                make_disjoint_window,
                get_rolling_token_windows(
                    token_list=self.tok_encode(string, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            )
            out.append(sum(self._score(list(ctx), list(cont))[0] for ctx, cont in windows))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        out = []
        for context, gen_kwargs in tqdm([r.args for r in requests], desc="generate_until", disable=disable_tqdm):
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.get("max_gen_toks", 256))
            key = ItemStore.key("gen", context, until, max_new)
            hit = self.store.get(key)
            if hit is None:
                hit = self._greedy(self.tok_encode(context), until, max_new)
                self.store.put(key, hit)
            out.append(hit)
        return out

    def _greedy(self, ids: List[int], until: List[str], max_new: int) -> str:
        new: List[int] = []
        text = ""
        for _ in range(max_new):
            token = int(self.loaded.logprobs((ids + new)[-self.max_length :])[-1].argmax())
            if token == self.tok.eos_id:
                break
            new.append(token)
            text = self.tok.decode(new)
            if any(s in text for s in until):
                break
        for s in until:
            text = text.split(s)[0]
        return text
