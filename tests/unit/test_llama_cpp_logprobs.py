"""The llama.cpp engine's log-softmax over full-vocabulary logits: exact, chunked, and it never writes into
llama.cpp's own logits buffer (it reads that buffer in place)."""

import numpy as np

from runner.engines.llama_cpp import log_softmax_rows


def test_chunked_log_softmax_matches_float64_reference():
    rng = np.random.default_rng(0)
    logits = (rng.normal(size=(130, 4099)) * 8).astype(np.float32)  # 3 chunks of rows, the last one short
    logits[5, 17] = 1e4  # one dominant token: no overflow
    before = logits.copy()
    x = logits.astype(np.float64)
    ref = x - x.max(axis=1, keepdims=True)
    ref -= np.log(np.exp(ref).sum(axis=1, keepdims=True))
    got = log_softmax_rows(logits)
    assert got.dtype == np.float32 and got.shape == logits.shape
    np.testing.assert_allclose(got, ref, atol=2e-5)
    np.testing.assert_array_equal(logits, before)
    assert got[5, 17] == 0.0
