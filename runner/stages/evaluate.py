"""evaluate(artifact) -> quality metrics on one fixed token stream shared by every engine.

The stream is the eval corpus tokenized once by the *base* model's tokenizer; every engine gets
the same ids in the same windows. The baseline's top-k log-probs on those windows are computed
once per (model, corpus, protocol) and cached (see runner/metrics.py for the size bound).
"""
import gc
import json
import logging
from dataclasses import dataclass
from typing import Dict, Iterator, List, Tuple

import numpy as np
from tqdm import tqdm

from runner.cache import Cache
from runner.data.corpus import load_corpus
from runner.engines import get_engine
from runner.errors import UserError
from runner.hashing import sha256_file
from runner import metrics as M

log = logging.getLogger(__name__)


@dataclass
class TokenStream:
    ids: np.ndarray  # int32 [n_tokens]
    bos_id: int | None
    corpus_sha256: str
    corpus: str
    key: str


@dataclass
class Reference:
    nll: np.ndarray  # baseline NLL per scored token
    top_ids: np.ndarray  # [n_scored, k]
    top_logprobs: np.ndarray  # [n_scored, k]
    baseline: str
    artifact_key: str

    @property
    def ppl(self) -> float:
        return M.perplexity(self.nll)


def protocol(eval_cfg, stream: TokenStream) -> Dict[str, object]:
    """Everything that makes two perplexities comparable; logged as params."""
    return {
        "eval.protocol": "token-level NLL, sliding windows",
        "eval.ctx_len": eval_cfg.ctx_len, "eval.stride": eval_cfg.stride, "eval.n_tokens": len(stream.ids),
        "eval.add_bos": eval_cfg.add_bos, "eval.bos_id": stream.bos_id, "eval.corpus_sha256": stream.corpus_sha256,
        "eval.corpus": stream.corpus, "eval.kld_topk": eval_cfg.kld_topk, "eval.baseline": eval_cfg.baseline,
        "eval.n_scored": sum(len(t) for _, t, _ in iter_windows(stream, eval_cfg)),
    }


def token_stream(model, eval_cfg, cache: Cache) -> TokenStream:
    corpus = load_corpus(eval_cfg.corpus, cache, "eval.corpus")
    tok_files = [p for p in sorted(model.path.glob("tokenizer*")) if p.is_file()]
    key = Cache.key("tokens", [sha256_file(p, cache.memo_dir) for p in tok_files], corpus.sha256, eval_cfg.n_tokens)
    hit = cache.get("tokens", key)
    tokenizer = model.load_tokenizer()
    if not hit:
        ids = tokenizer(corpus.text, add_special_tokens=False)["input_ids"]
        if len(ids) < eval_cfg.n_tokens:
            raise UserError("eval.n_tokens", f"the corpus has only {len(ids)} tokens, {eval_cfg.n_tokens} asked",
                            f"lower eval.n_tokens to <= {len(ids)} or add texts to eval.corpus")
        with cache.put("tokens", key) as tmp:
            np.save(tmp / "ids.npy", np.asarray(ids[: eval_cfg.n_tokens], dtype=np.int32))
        hit = cache.get("tokens", key)
    if eval_cfg.add_bos and tokenizer.bos_token_id is None:
        raise UserError("eval.add_bos", "this tokenizer has no BOS token", "set eval.add_bos=false")
    return TokenStream(np.load(hit / "ids.npy"), tokenizer.bos_token_id, corpus.sha256, corpus.description, key)


def iter_windows(stream: TokenStream, eval_cfg) -> Iterator[Tuple[List[int], np.ndarray, np.ndarray]]:
    """Yield (model input ids, row indices of the log-prob matrix to score, target ids).

    Windows of ctx_len text tokens start every `stride` tokens; each text token is scored at most
    once, by the first window that sees it with context. With add_bos, BOS is prepended to every
    window so its first text token is scored too.
    """
    n, ctx, stride = len(stream.ids), eval_cfg.ctx_len, eval_cfg.stride
    if ctx < 2 or stride < 1 or stride > ctx:
        raise UserError("eval.stride", f"need ctx_len >= 2 and 1 <= stride <= ctx_len (got {ctx}, {stride})",
                        "set eval.stride to eval.ctx_len for disjoint windows")
    offset = 1 if eval_cfg.add_bos else 0
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


def reference(model, eval_cfg, stream: TokenStream, hardware, cache: Cache, baseline_artifact) -> Reference:
    key = Cache.key("reference", baseline_artifact.manifest["key"], stream.key, eval_cfg.ctx_len, eval_cfg.stride,
                    eval_cfg.add_bos, eval_cfg.kld_topk)
    hit = cache.get("references", key)
    if not hit:
        loaded = get_engine(baseline_artifact.engine).load(baseline_artifact, model, hardware)
        nll, ids, lps = [], [], []
        try:
            for inputs, rows, targets in tqdm(list(iter_windows(stream, eval_cfg)), desc=f"reference ({eval_cfg.baseline})", unit="win"):
                lp = loaded.logprobs(inputs)[rows]
                nll.append(M.token_nll(lp, targets))
                top_i, top_l = M.topk(lp, eval_cfg.kld_topk)
                ids.append(top_i)
                lps.append(top_l)
        finally:
            loaded.close()
        with cache.put("references", key, label=f"{model.name} {eval_cfg.baseline} top-{eval_cfg.kld_topk}") as tmp:
            np.savez(tmp / "reference.npz", nll=np.concatenate(nll).astype(np.float32), top_ids=np.concatenate(ids),
                     top_logprobs=np.concatenate(lps))
            (tmp / "meta.json").write_text(json.dumps({"baseline": eval_cfg.baseline, "artifact": baseline_artifact.manifest["key"]}))
        hit = cache.get("references", key)
    data = np.load(hit / "reference.npz")
    return Reference(data["nll"].astype(np.float64), data["top_ids"], data["top_logprobs"], eval_cfg.baseline,
                     baseline_artifact.manifest["key"])


def evaluate(artifact, model, eval_cfg, stream: TokenStream, ref: Reference, hardware) -> Dict[str, float]:
    if artifact.manifest["key"] == ref.artifact_key:  # the baseline itself: its numbers are the reference
        nll = ref.nll
        kld, agree = np.zeros_like(nll), np.ones(len(nll), dtype=bool)
    else:
        loaded = get_engine(artifact.engine).load(artifact, model, hardware)
        nll_parts, kld_parts, agree_parts, pos = [], [], [], 0
        try:
            for inputs, rows, targets in tqdm(list(iter_windows(stream, eval_cfg)), desc=f"evaluate ({artifact.manifest['format']})", unit="win"):
                lp = loaded.logprobs(inputs)[rows]
                sl = slice(pos, pos + len(rows))
                nll_parts.append(M.token_nll(lp, targets))
                kld_parts.append(M.kld_topk(ref.top_ids[sl], ref.top_logprobs[sl], lp))
                agree_parts.append(M.top1_agreement(ref.top_ids[sl, 0], lp))
                pos += len(rows)
        finally:
            loaded.close()
            gc.collect()
        nll, kld, agree = np.concatenate(nll_parts), np.concatenate(kld_parts), np.concatenate(agree_parts)
    ppl = M.perplexity(nll)
    return {
        "quality/ppl": ppl,
        "quality/baseline_ppl": ref.ppl,
        "quality/ppl_delta_pct": 100.0 * (ppl / ref.ppl - 1.0),
        "quality/kld_mean": float(np.mean(kld)),
        "quality/kld_p99": float(np.percentile(kld, 99)),
        "quality/top1_agree": float(np.mean(agree)),
    }
