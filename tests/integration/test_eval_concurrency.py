"""The torch engine scores several eval windows at once where its matmuls leave cores idle (fp16 on a CPU
without oneDNN fp16): the same arrays, in the same order, errors raised in place."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from runner.engines.torch_engine import TorchEngine, windows_at_once

HARDWARE = SimpleNamespace(device="cpu", threads=2)


@pytest.fixture(scope="module")
def fp16_loaded(tiny_model_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny_fp16")
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float16).save_pretrained(
        out, safe_serialization=True
    )
    artifact = SimpleNamespace(
        path=str(out), manifest={"format": "fp16", "weight_files": [p.name for p in out.glob("*.safetensors")]}
    )
    threads = torch.get_num_threads()
    loaded = TorchEngine().load(artifact, SimpleNamespace(allow_pickle=False, trust_remote_code=False), HARDWARE)
    yield loaded
    loaded.close()
    torch.set_num_threads(threads)


def _cpu_flags() -> set:
    from pathlib import Path

    info = Path("/proc/cpuinfo")
    lines = [line for line in info.read_text().splitlines() if line.startswith("flags")] if info.exists() else []
    return set(lines[0].split(":", 1)[1].split()) if lines else set()


def test_the_onednn_fp16_probe_is_this_cpus_fp16_instructions():
    """oneDNN runs fp16 GEMMs natively with AVX512-FP16 or AMX-FP16: the probe the engine reads says the same."""
    flags = _cpu_flags()
    if not flags:
        pytest.skip("needs /proc/cpuinfo (Linux) to read the CPU's instruction sets")
    assert torch.ops.mkldnn._is_mkldnn_fp16_supported() == bool({"avx512_fp16", "amx_fp16"} & flags)


@pytest.mark.parametrize("onednn_fp16", [False, True], ids=["without_onednn_fp16", "with_onednn_fp16"])
def test_only_fp16_on_a_cpu_without_onednn_fp16_scores_windows_at_once(onednn_fp16, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: onednn_fp16)
    fp16_cores_idle = not onednn_fp16
    assert windows_at_once(torch.float16, "cpu", 2) == (2 if fp16_cores_idle else 1)
    assert windows_at_once(torch.float16, "cpu", 4) == (4 if fp16_cores_idle else 1)
    assert windows_at_once(torch.float16, "cpu", 64) == (4 if fp16_cores_idle else 1)  # capped
    assert windows_at_once(torch.float16, "cpu", 1) == 1
    assert windows_at_once(torch.float16, "cuda", 2) == 1
    assert windows_at_once(torch.float32, "cpu", 2) == 1


def test_fp16_windows_scored_at_once_give_the_same_logprobs_in_order(fp16_loaded):
    assert fp16_loaded.model.dtype == torch.float16
    assert fp16_loaded.windows_at_once == windows_at_once(torch.float16, "cpu", HARDWARE.threads)
    rng = np.random.default_rng(0)
    windows = [rng.integers(3, 500, size=n).tolist() for n in (128, 97, 128, 64, 128, 5, 128, 111)]
    sequential = [fp16_loaded.logprobs(ids) for ids in windows]

    one_by_one = fp16_loaded.logprobs
    lock, running, calls = threading.Lock(), [0], []

    def watched(ids):  # the engine's own logprobs, noting which thread ran it and how many ran at once
        with lock:
            running[0] += 1
            calls.append((threading.current_thread().name, running[0]))
        try:
            return one_by_one(ids)
        finally:
            with lock:
                running[0] -= 1

    fp16_loaded.logprobs = watched
    try:
        scored = list(fp16_loaded.logprobs_many(iter(windows)))
    finally:
        del fp16_loaded.logprobs
    assert len(scored) == len(windows) == len(calls)
    for got, want in zip(scored, sequential):  # bit-identical, window order kept
        assert got.dtype == np.float32 and got.shape == want.shape and np.array_equal(got, want)
    if fp16_loaded.windows_at_once > 1:
        assert all(name.startswith("qrun-window") for name, _ in calls)
        assert max(at_once for _, at_once in calls) == fp16_loaded.windows_at_once
    else:
        assert {name for name, _ in calls} == {threading.current_thread().name}


def test_a_failing_window_raises_in_place_after_the_windows_before_it(fp16_loaded):
    vocab = fp16_loaded.model.config.vocab_size
    windows = [[5, 6, 7], [8, 9], [vocab + 7, 1], [10, 11], [12]]
    scored = fp16_loaded.logprobs_many(windows)
    assert [lp.shape[0] for lp in (next(scored), next(scored))] == [3, 2]
    with pytest.raises(IndexError):
        next(scored)
    assert [lp.shape[0] for lp in fp16_loaded.logprobs_many(windows[3:])] == [2, 1]  # still usable
