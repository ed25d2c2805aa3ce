"""The eval protocol: which tokens each window scores."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from runner.errors import UserError
from runner.quality.stream import TokenStream, iter_windows


def _stream(n):
    return TokenStream(ids=np.arange(100, 100 + n, dtype=np.int32), bos_id=1, corpus_sha256="x", corpus="x", key="k")


def _cfg(ctx, stride, bos=False):
    return OmegaConf.create({"ctx_len": ctx, "stride": stride, "add_bos": bos})


@pytest.mark.parametrize(
    "n,ctx,stride,bos",
    [
        (100, 10, 10, False),
        (100, 10, 10, True),
        (95, 16, 5, False),
        (95, 16, 5, True),
        (7, 10, 10, False),
        (64, 8, 1, False),
    ],
)
def test_each_token_scored_at_most_once_with_the_right_row(n, ctx, stride, bos):
    stream = _stream(n)
    scored = []
    for inputs, rows, targets in iter_windows(stream, _cfg(ctx, stride, bos)):
        assert len(inputs) <= ctx
        assert len(rows) == len(targets)
        for row, target in zip(rows, targets):
            # the row predicting `target` has seen exactly the tokens before it in the window
            predicted_pos = int(target) - 100
            context = inputs[: row + 1]
            assert context[-1] == (1 if (bos and row == 0) else 100 + predicted_pos - 1)
        scored += [int(t) for t in targets]
    assert len(scored) == len(set(scored))
    expected_first = 100 if bos else 101  # without BOS the very first token has no context
    assert min(scored) == expected_first and max(scored) == 100 + n - 1
    if stride < ctx:  # overlapping windows leave no gaps
        assert sorted(scored) == list(range(expected_first, 100 + n))


def test_disjoint_windows_without_bos_skip_each_window_start():
    targets = np.concatenate([t for _, _, t in iter_windows(_stream(30), _cfg(10, 10))]) - 100
    assert sorted(targets.tolist()) == [i for i in range(30) if i % 10 != 0]


def test_bad_stride_is_a_user_error():
    with pytest.raises(UserError, match="eval.stride"):
        list(iter_windows(_stream(30), _cfg(10, 20)))
