"""vLLM engine: the dense log-prob rebuild from top-K, and the availability checks (CUDA profiles faked)."""

import types

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import ROOT
from runner.config.schema import HardwareConfig
from runner.engines import get_engine
from runner.engines.vllm import TOP_K, _as_floats, dense_logprobs
from runner.errors import UserError
from runner.quality import scoring as M


def _softmax_rows(n, vocab, seed=0):
    logits = np.random.default_rng(seed).normal(0, 3, (n, vocab))
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def _topk_rows(full, k, extra_ids):
    """What vLLM returns: the top k of each row plus one more id (the actual next token)."""
    top, _ = M.topk(full.astype(np.float32), k)
    return [
        {**{int(t): float(full[r, t]) for t in top[r]}, int(extra_ids[r]): float(full[r, extra_ids[r]])}
        for r in range(len(full))
    ]


def test_dense_rows_are_distributions_with_exact_known_entries():
    full = _softmax_rows(6, 500)
    targets = np.random.default_rng(1).integers(0, 500, 6)
    rows = _topk_rows(full, 20, targets)
    dense = dense_logprobs(rows, 500)
    assert dense.shape == (6, 500) and dense.dtype == np.float32
    np.testing.assert_allclose(np.exp(dense.astype(np.float64)).sum(1), 1.0, rtol=1e-5)
    for r, known in enumerate(rows):
        ids = list(known)
        np.testing.assert_allclose(dense[r, ids], [known[i] for i in ids], rtol=1e-6)
        others = np.setdiff1d(np.arange(500), ids)
        kth = sorted(known.values(), reverse=True)[19]  # the 20th best: nothing unknown is more likely
        assert np.ptp(dense[r, others]) == 0 and dense[r, others[0]] <= kth


def test_ppl_and_top1_exact_kld_close():
    full = _softmax_rows(64, 2000, seed=2)
    cand = full + np.random.default_rng(3).normal(0, 0.05, full.shape)
    cand -= np.log(np.exp(cand).sum(1, keepdims=True))
    targets = np.random.default_rng(4).integers(0, 2000, 64)
    dense = dense_logprobs(_topk_rows(cand, TOP_K, targets), 2000)
    np.testing.assert_allclose(M.token_nll(dense, targets), M.token_nll(cand, targets), rtol=1e-5)
    ref_ids, ref_lp = M.topk(full.astype(np.float32), 64)  # eval.kld_topk's default
    assert (M.top1_agreement(ref_ids[:, 0], dense) == M.top1_agreement(ref_ids[:, 0], cand)).all()
    exact, approx = M.kld_topk(ref_ids, ref_lp, cand).mean(), M.kld_topk(ref_ids, ref_lp, dense).mean()
    assert exact > 0 and abs(approx - exact) / exact < 0.01
    assert TOP_K >= 2 * 64


def test_as_floats_reads_logprob_objects():
    pos = {5: types.SimpleNamespace(logprob=-0.5, rank=1), 9: types.SimpleNamespace(logprob=-2.0, rank=2)}
    assert _as_floats(pos) == {5: -0.5, 9: -2.0}


def _hw(name):
    return OmegaConf.merge(
        OmegaConf.structured(HardwareConfig), OmegaConf.load(ROOT / "conf" / "hardware" / f"{name}.yaml")
    )


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())


def test_no_cuda_is_one_line(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU") as e:
        get_engine("exllamav2").check_available(OmegaConf.structured(HardwareConfig(name="cpu")))
    assert e.value.key == "format.engine" and "\n" not in str(e.value)
    with pytest.raises(
        UserError, match="^format.engine: the vllm engine needs a CUDA GPU for hardware=cuda"
    ) as e:  # vllm runs on CPU profiles
        get_engine("vllm").check_available(_hw("cuda"))
    assert e.value.key == "format.engine" and "\n" not in str(e.value)


def test_cpu_profile_on_a_gpu_machine(fake_cuda):
    with pytest.raises(UserError, match="CPU profile") as e:
        get_engine("exllamav2").check_available(_hw("cpu"))
    assert e.value.key == "hardware"


def test_tensor_parallel_needs_the_gpus(fake_cuda, monkeypatch, tmp_path):
    with pytest.raises(UserError, match="asks for 2 GPUs, this machine has 1"):
        get_engine("vllm").check_available(_hw("rtx3090x2"))
    monkeypatch.setenv("QRUN_VLLM_VENV", str(tmp_path))  # one GPU is fine: the next check is the vLLM venv
    with pytest.raises(UserError, match="make venv-vllm"):
        get_engine("vllm").check_available(_hw("h100"))


def test_vllm_venv_missing(monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    monkeypatch.setenv("QRUN_VLLM_VENV", str(tmp_path / "none"))
    with pytest.raises(UserError, match=r"^format.engine: vLLM runs in its own venv .* -- fix: make venv-vllm"):
        get_engine("vllm").check_available(_hw("h100"))
