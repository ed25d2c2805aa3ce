"""The offline benchmark runs in a fresh process: its memory is the engine's own, its errors come back as they were.
Also: CUDA sync at every timing boundary (through the injectable hook), and recommend never reads RSS as VRAM."""

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import assert_benchmarked
from runner.config.schema import HardwareConfig
from runner.engines import get_engine
from runner.errors import UserError
from runner.formats.artifacts import Artifact
from runner.report.data import Row
from runner.report.recommend import Constraints, violations
from runner.stages.benchmark import benchmark, run_worker, worker_request

BENCH = OmegaConf.create({"kind": "offline", "prompt_tokens": 16, "gen_tokens": 8, "repeats": 2, "warmup": 1})
STREAM = SimpleNamespace(ids=np.arange(1, 65))
MODEL = SimpleNamespace(trust_remote_code=False, allow_pickle=False)  # llama.cpp reads only the artifact


def _hw(**kw):
    return OmegaConf.structured(HardwareConfig(**{"name": "cpu", "threads": 1, **kw}))


@pytest.fixture(scope="module")
def gguf_job(tiny_sweep):
    """A real job (its process imports torch, transformers, mlflow) that quantized to GGUF and benchmarked it."""
    run = tiny_sweep.by_format["gguf_q8_0"]
    folder = Path(run.data.tags["artifact.path"])
    return run, Artifact(folder, json.loads((folder / "manifest.json").read_text()))


def test_llama_cpp_job_logs_the_engines_memory_not_the_job_process(gguf_job):
    run, artifact = gguf_job
    m, p = run.data.metrics, run.data.params
    # python + llama.cpp + a ~1 MB file; the job process itself holds torch + transformers + mlflow (> 400 MB)
    assert 20e6 < m["perf/peak_rss_bytes"] < 200e6, m["perf/peak_rss_bytes"]
    assert p["perf.memory_scope"] == "fresh process: llama_cpp + python"
    assert "perf/peak_vram_bytes" not in m  # a CPU run: not measured, not logged
    assert_benchmarked(m)


def test_worker_for_llama_cpp_never_imports_torch_and_its_probes_agree(gguf_job):
    _, artifact = gguf_job
    out = run_worker(worker_request(artifact, MODEL, BENCH, STREAM, _hw(), "llama_cpp"))
    assert out["heavy_modules"] == []
    assert len(out["ttft_s"]) == BENCH.repeats and all(t > tt > 0 for t, tt in zip(out["total_s"], out["ttft_s"]))
    # the sampled peak and the kernel's high-water mark (VmHWM) describe the same process
    assert abs(out["peak_rss"] - out["hwm_rss"]) < 0.2 * out["hwm_rss"], (out["peak_rss"], out["hwm_rss"])


def test_user_error_in_the_worker_comes_back_as_the_same_one_line_user_error(gguf_job):
    _, artifact = gguf_job
    hw = _hw(n_gpu_layers=1)  # this CPU build of llama.cpp cannot offload: the worker's engine check refuses
    with pytest.raises(UserError) as in_process:
        get_engine("llama_cpp").check_available(hw)
    with pytest.raises(UserError) as from_worker:
        benchmark(artifact, MODEL, BENCH, STREAM, hw, "llama_cpp")
    assert str(from_worker.value) == str(in_process.value) and "\n" not in str(from_worker.value)
    assert from_worker.value.key == "hardware.n_gpu_layers"


def test_a_crash_of_the_worker_names_the_engine(gguf_job):
    _, artifact = gguf_job
    with pytest.raises(RuntimeError, match=r"^format.engine=llama_cpp: the benchmark process was killed by SIG"):
        benchmark(artifact, MODEL, BENCH, STREAM, _hw(threads=100000), "llama_cpp")  # llama.cpp segfaults on it


def test_torch_generate_syncs_the_device_at_start_first_token_and_end(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from runner.engines.torch_engine import TorchLoaded

    loaded = TorchLoaded(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), "cpu")
    calls = []
    loaded.sync = lambda: calls.append(time.perf_counter())
    timing = loaded.generate(list(range(1, 17)), 4)
    assert len(calls) == 3  # before the clock starts, before TTFT is read, before the total is read
    # TTFT was read right after the second sync, the total right after the third
    assert calls[1] - calls[0] == pytest.approx(timing.ttft_s, abs=5e-3)
    assert calls[2] - calls[0] == pytest.approx(timing.total_s, abs=5e-3)


def test_torch_prefill_computes_only_the_last_positions_logits(tiny_model_dir):
    """As llama.cpp, vLLM and ExLlamaV2 do: the full-vocabulary head over every prompt position is not prefill."""
    from transformers import AutoModelForCausalLM

    from runner.engines.torch_engine import TorchLoaded

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    shapes = []
    model.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.logits.shape)))
    timing = TorchLoaded(model, "cpu").generate(list(range(1, 17)), 3)
    assert shapes == [(1, 1, 512)] * 3 and timing.new_tokens == 3  # the prefill, then one step per new token


def test_a_repeat_that_stops_early_fails_the_benchmark_naming_the_engine(gguf_job, monkeypatch):
    from runner.stages import benchmark as stage

    _, artifact = gguf_job
    real = stage.run_worker
    monkeypatch.setattr(stage, "run_worker", lambda request: {**real(request), "new_tokens": [BENCH.gen_tokens, 3]})
    with pytest.raises(
        RuntimeError,
        match=r"^format.engine=llama_cpp: a benchmark repeat generated 3 tokens where "
        r"benchmark.gen_tokens=8 were asked",
    ):
        benchmark(artifact, MODEL, BENCH, STREAM, _hw(), "llama_cpp")


def _row(device, metrics):
    return Row("r1", "FINISHED", {"format.name": "fp16", "hardware.device": device}, metrics)


def test_recommend_never_compares_a_vram_budget_with_host_rss():
    budget = Constraints(memory_bytes=22 * 1024**3)
    gpu_without_vram = _row("cuda", {"perf/peak_rss_bytes": 1e9, "size/bytes": 5e8})
    assert violations(gpu_without_vram, budget) == ["memory not measured"]
    assert violations(_row("cuda", {"perf/peak_rss_bytes": 1e9, "perf/peak_vram_bytes": 30e9}), budget)[0].startswith(
        "needs"
    )
    assert violations(_row("cpu", {"perf/peak_rss_bytes": 1e9}), budget) == []
