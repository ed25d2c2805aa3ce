"""The runner's ppl, mean KLD, RMS Δp and same-top-p equal llama.cpp's own `llama-perplexity --kl-divergence` within
1 %, on the tiny Llama's GGUF files and the same token ids (eval=llama_perplexity, baseline gguf_f16 on both sides).

The same comparison as timings/llama_perplexity_ratio.py (SmolLM2 there), through its parity(). Missing binary
(`make llama-perplexity`): the test skips under `make test` and fails under `make test-all`.
"""

import sys

import pytest

from helpers import ROOT, need
from runner.system import llama_cpp_tools

sys.path.insert(0, str(ROOT / "timings"))
import llama_perplexity_ratio as parity  # noqa: E402


@pytest.mark.slow
def test_runner_equals_llama_perplexity_within_one_percent(tiny_model_dir, cache_dir, tmp_path):
    need(llama_cpp_tools.binary("llama-perplexity") is not None, "llama-perplexity (make llama-perplexity)")
    # 8 chunks of 128 ids: 63 scored per chunk, 504 in all (llama-perplexity prints its statistics from 100)
    overrides = ["model=hf", f"model.id={tiny_model_dir}", "eval.n_tokens=1024", "eval.ctx_len=128"]
    tokens, results = parity.parity([*overrides, "eval.stride=128", f"cache.dir={cache_dir}"], scratch=tmp_path)
    assert tokens["same"], tokens  # the ids llama-perplexity scored are the runner's stream, BOS included
    assert tokens["chunks"] == 8
    for name, (ours, theirs) in results.items():
        for label, metric, line in parity.COMPARED:
            # within 1 %, or within the last digit llama-perplexity prints (the tiny q8_0's KLD is 0.000014)
            assert parity.within(ours[metric], theirs, line), (name, label, ours[metric], theirs[line])
