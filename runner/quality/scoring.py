"""Quality math on log-probabilities: NLL/perplexity, top-k KL-divergence, top-1 agreement.

The baseline keeps only its top-k log-probs per token, so its reference data stays small
(n_tokens x k x 8 bytes). KLD is computed over k+1 categories: the baseline's top-k tokens and one
bucket holding the rest of the mass. Merging categories never increases KL (data-processing
inequality), so this is a lower bound of the full-vocabulary KLD that becomes exact as the top-k
hold all of the baseline's mass; with k=64 on a 49k vocabulary the tail mass is typically <1 %.
"""

import numpy as np

_TINY = 1e-12


def token_nll(logprobs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target: logprobs [n, V], targets [n] -> [n]."""
    return -logprobs[np.arange(len(targets)), targets].astype(np.float64)


def perplexity(nll: np.ndarray) -> float:
    return float(np.exp(np.mean(nll)))


def topk(logprobs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k token ids and log-probs per row, best first: ([n, k] int32, [n, k] float32).

    torch.topk, not numpy: on a 512 x 49k window it takes 0.03 s against argpartition + argsort's 0.4 s (one
    thread), which was ~13 s of every baseline's reference pass."""
    import torch

    k = min(k, logprobs.shape[1])
    vals, ids = torch.from_numpy(np.ascontiguousarray(logprobs, dtype=np.float32)).topk(k, dim=1, sorted=True)
    return ids.numpy().astype(np.int32), vals.numpy()


def kld_topk(ref_ids: np.ndarray, ref_logprobs: np.ndarray, cand_logprobs: np.ndarray) -> np.ndarray:
    """Per-token KL(P_ref || Q_cand) over the reference's top-k tokens plus one 'rest' bucket."""
    lp = ref_logprobs.astype(np.float64)
    lq = np.take_along_axis(cand_logprobs, ref_ids, axis=1).astype(np.float64)
    p, q = np.exp(lp), np.exp(lq)
    head = np.sum(p * (lp - lq), axis=1)
    p_rest = np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)
    q_rest = np.clip(1.0 - q.sum(axis=1), _TINY, 1.0)
    tail = np.where(p_rest > _TINY, p_rest * (np.log(np.maximum(p_rest, _TINY)) - np.log(q_rest)), 0.0)
    return np.maximum(head + tail, 0.0)


def top1_agreement(ref_top1: np.ndarray, cand_logprobs: np.ndarray) -> np.ndarray:
    """Boolean per token: does the candidate's most likely token equal the baseline's?"""
    return cand_logprobs.argmax(axis=1) == ref_top1
