"""The eval token stream: the eval corpus tokenized once by the *base* model's own tokenizer.

llama.cpp's tokenizer for a model from a GGUF when the HF one disagrees (runner/data/tokenization.py);
every engine gets the same ids in the same windows (iter_windows), for evaluate and benchmark alike.
"""

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from runner.cache import Cache
from runner.data.corpus import load_corpus
from runner.data.tokenization import MIN_CHARS_PER_TOKEN, choose_tokenizer, hf_tokenizer, resolve_add_bos, stream_sample
from runner.engines.base import dist_versions
from runner.errors import UserError
from runner.system.hashing import sha256_file


@dataclass
class TokenStream:
    ids: np.ndarray  # int32 [n_tokens]
    bos_id: int | None
    corpus_sha256: str
    corpus: str
    key: str
    tokenizer: str = "hf"  # which tokenizer made the ids: hf | llama_cpp
    chars_per_token: Optional[float] = None  # on the checked sample
    add_bos: Optional[bool] = None  # resolved eval.add_bos (None only in hand-built streams: the config's then)
    add_bos_source: str = "config"  # config | gguf | tokenizer


def uses_bos(stream: TokenStream, eval_cfg) -> bool:
    return bool(eval_cfg.add_bos) if stream.add_bos is None else stream.add_bos


def stream_params(stream: TokenStream) -> Dict[str, object]:
    """How the stream was made; logged as params by every job that builds one."""
    return {
        "eval.tokenizer": stream.tokenizer,
        "eval.chars_per_token": round(stream.chars_per_token or 0.0, 3),
        "eval.tokens_plausible": (stream.chars_per_token or 0.0) >= MIN_CHARS_PER_TOKEN,
        "eval.add_bos": stream.add_bos,
        "eval.add_bos_source": stream.add_bos_source,
    }


def protocol(eval_cfg, stream: TokenStream) -> Dict[str, object]:
    """Everything that makes two perplexities comparable; logged as params."""
    return {
        **stream_params(stream),
        "eval.protocol": PROTOCOLS[getattr(eval_cfg, "windows", "sliding")],
        "eval.ctx_len": eval_cfg.ctx_len,
        "eval.stride": eval_cfg.stride,
        "eval.n_tokens": len(stream.ids),
        "eval.add_bos": uses_bos(stream, eval_cfg),
        "eval.bos_id": stream.bos_id,
        "eval.corpus_sha256": stream.corpus_sha256,
        "eval.corpus": stream.corpus,
        "eval.kld_topk": eval_cfg.kld_topk,
        "eval.baseline": eval_cfg.baseline,
        "eval.n_scored": sum(len(t) for _, t, _ in iter_windows(stream, eval_cfg)),
    }


PROTOCOLS = {  # eval.windows -> what the eval.protocol param says
    "sliding": "token-level NLL, sliding windows",
    "llama_perplexity": "token-level NLL, llama-perplexity chunks (disjoint, first half context only)",
}


def windows_key(eval_cfg) -> List[str]:
    """The protocol's part of a cache key: nothing for the sliding windows, so keys made before there was a choice
    (cached references and evaluations) stay valid."""
    name = getattr(eval_cfg, "windows", "sliding")
    return [] if name == "sliding" else [name]


def token_stream(model, eval_cfg, cache: Cache) -> TokenStream:
    corpus = load_corpus(eval_cfg.corpus, cache, "eval.corpus")
    tokenizer = model.load_tokenizer()
    gguf = model.source_gguf if model.source_gguf and model.source_gguf.is_file() else None
    hf = hf_tokenizer(tokenizer)
    made_by = choose_tokenizer(hf, gguf, stream_sample(corpus.text, hf, eval_cfg.n_tokens), model.name)
    try:
        stream = _cached_stream(model, eval_cfg, cache, corpus, made_by, gguf)
    finally:
        made_by.close()
    add_bos, source = resolve_add_bos(eval_cfg.add_bos, tokenizer, gguf)
    if add_bos and made_by.bos_id is None:
        if source == "config":
            raise UserError("eval.add_bos", "this tokenizer has no BOS token", "set eval.add_bos=false")
        add_bos = False
    stream.add_bos, stream.add_bos_source = add_bos, source
    return stream


def _cached_stream(model, eval_cfg, cache: Cache, corpus, made_by, gguf) -> TokenStream:
    tok_files = [p for p in sorted(model.path.glob("tokenizer*")) if p.is_file()]
    which = (
        [made_by.name]
        if made_by.name == "hf"
        else [made_by.name, sha256_file(gguf, cache.memo_dir), dist_versions("llama-cpp-python")]
    )
    key = Cache.key(
        "tokens", [sha256_file(p, cache.memo_dir) for p in tok_files], corpus.sha256, eval_cfg.n_tokens, which
    )

    def build(folder):
        ids = made_by.encode(corpus.text)
        if len(ids) < eval_cfg.n_tokens:
            raise UserError(
                "eval.n_tokens",
                f"the corpus has only {len(ids)} tokens, {eval_cfg.n_tokens} asked",
                f"lower eval.n_tokens to <= {len(ids)} or add texts to eval.corpus",
            )
        np.save(folder / "ids.npy", np.asarray(ids[: eval_cfg.n_tokens], dtype=np.int32))

    hit = cache.get_or_build("tokens", key, build)
    return TokenStream(
        np.load(hit / "ids.npy"),
        made_by.bos_id,
        corpus.sha256,
        corpus.description,
        key,
        made_by.name,
        made_by.chars_per_token,
    )


def iter_windows(stream: TokenStream, eval_cfg) -> Iterator[Tuple[List[int], np.ndarray, np.ndarray]]:
    """Yield (model input ids, row indices of the log-prob matrix to score, target ids).

    Windows of ctx_len text tokens start every `stride` tokens; each text token is scored at most
    once, by the first window that sees it with context. With add_bos, BOS is prepended to every
    window so its first text token is scored too.
    """
    if getattr(eval_cfg, "windows", "sliding") == "llama_perplexity":
        yield from _chunks(stream, eval_cfg)
        return
    n, ctx, stride = len(stream.ids), eval_cfg.ctx_len, eval_cfg.stride
    if ctx < 2 or stride < 1 or stride > ctx:
        raise UserError(
            "eval.stride",
            f"need ctx_len >= 2 and 1 <= stride <= ctx_len (got {ctx}, {stride})",
            "set eval.stride to eval.ctx_len for disjoint windows",
        )
    offset = 1 if uses_bos(stream, eval_cfg) else 0
    start, scored_until = 0, 0
    while True:
        end = min(start + ctx, n)
        text = stream.ids[start:end]
        first = max(scored_until - start, 1 - offset)
        idx = np.arange(first, len(text))
        # the model always sees ctx_len ids; with BOS the window's last text token is only a target
        inputs = [stream.bos_id] + text[:-1].tolist() if offset else text.tolist()
        if len(idx):
            yield inputs, idx - 1 + offset, text[idx]
        scored_until = end
        if end >= n:
            return
        start += stride


def _chunks(stream: TokenStream, eval_cfg) -> Iterator[Tuple[List[int], np.ndarray, np.ndarray]]:
    """llama.cpp's `llama-perplexity` protocol (tools/perplexity/perplexity.cpp, perplexity() and kl_divergence()).

    It tokenizes the text with BOS first (where the vocab adds one), cuts the ids into disjoint chunks of n_ctx,
    writes BOS over each chunk's first id, runs the chunk, and scores only the logits at positions n_ctx/2 .. n_ctx-2
    (the first half is context; the last position's prediction falls outside the chunk); an incomplete last chunk is
    dropped. On the stream's ids (no BOS) that is: window c is [BOS] + ids[c*n : c*n + n - 1] (or ids[c*n : c*n + n]
    without BOS), one text token between chunks is never seen.
    """
    ids, ctx = stream.ids, eval_cfg.ctx_len
    bos = uses_bos(stream, eval_cfg)
    first = ctx // 2
    rows = np.arange(first, ctx - 1)
    for c in range((len(ids) + bos) // ctx):
        if bos:
            text = ids[c * ctx : c * ctx + ctx - 1]
            yield [stream.bos_id] + text.tolist(), rows, text[rows]  # input position r + 1 holds text[r]
        else:
            text = ids[c * ctx : c * ctx + ctx]
            yield text.tolist(), rows, text[rows + 1]
