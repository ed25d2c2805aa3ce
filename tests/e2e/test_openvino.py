"""OpenVINO INT8 / INT4 (NNCF weight compression through optimum-intel) on the tiny Llama, in .venv-openvino.

The export and the engine are real subprocesses of that venv (`make venv-openvino`; `make test-all` builds it
first). Where it is missing, the tests that run it skip naming it (`pytest -m openvino`) and fail under
`make test-all` (tests/conftest.py).
"""

import json
import os
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from helpers import ROOT, TINY_ARGS, assert_benchmarked, mlflow_runs, need, run_job, run_qrun
from runner.config.schema import register_configs
from runner.engines import openvino as OV
from runner.errors import UserError

register_configs()
pytestmark = pytest.mark.openvino


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _need_venv():
    """Skip, naming it, where the OpenVINO venv is missing (a failure under make test-all, tests/conftest.py)."""
    need(
        OV.installed_versions() is not None,
        f"{OV.venv_dir()} with openvino, nncf and optimum-intel: make venv-openvino",
    )


@pytest.mark.parametrize("preset,weight_type", [("openvino_int8", "u8"), ("openvino_int4", "u4")])
def test_end_to_end_through_qrun(preset, weight_type, tmp_path, cache_dir, tiny_model_dir):
    _need_venv()
    proc = run_qrun(
        ["model=hf", f"model.id={tiny_model_dir}", f"format={preset}", "hardware.threads=1", *TINY_ARGS],
        tmp_path,
        cache_dir,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    (run,) = [r for r in runs if "format.name" in r.data.params]
    m, params, tags = run.data.metrics, run.data.params, run.data.tags
    assert (
        run.info.status == "FINISHED"
        and tags["engine.name"] == "openvino"
        and "openvino 2026" in tags["engine.version"]
    )
    assert params["artifact.contents"].startswith(f"{weight_type} ")  # the .bin's weights really are INT8 / INT4
    # full-vocabulary log-probs of the same windows: close to the fp32 baseline, INT4 further than INT8
    bound = {"u8": 1e-3, "u4": 0.2}[weight_type]
    assert 0 < m["quality/kld_mean"] < bound and m["quality/top1_agree"] > 0.7, m
    assert m["quality/kld_mean_ci_low"] <= m["quality/kld_mean"] <= m["quality/kld_mean_ci_high"]
    bpw = {"u8": (8.0, 9.5), "u4": (4.0, 8.0)}[weight_type]  # the tiny model's untied embedding + lm_head stay INT8
    assert bpw[0] < m["size/bits_per_weight"] < bpw[1], m["size/bits_per_weight"]
    assert m["time/quantize_s"] > 0
    assert_benchmarked(m)


RELOAD = """
import importlib.util, json, sys
import numpy as np, torch
from optimum.intel import OVModelForCausalLM
assert importlib.util.find_spec("runner") is None, "runner must not be importable here"
path, ids, expected_lp = sys.argv[1], json.loads(sys.argv[2]), np.load(sys.argv[3])
ov_config = {"INFERENCE_PRECISION_HINT": "f32", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "0"}  # the presets' runtime settings
model = OVModelForCausalLM.from_pretrained(path, ov_config=ov_config)
x = torch.tensor([ids])
out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=8, min_new_tokens=8,
do_sample=False)
lp = torch.log_softmax(model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float(), -1).numpy()
print(json.dumps({"new": out.shape[1] - len(ids), "max_abs": float(np.abs(lp - expected_lp).max())}))
"""


def test_artifact_reloads_without_runner(tmp_path, cache_dir, tiny_model_dir):
    """The artifact is a plain optimum-intel folder: a fresh process of the OpenVINO venv, without `runner` on its
    path, reloads it, generates, and its log-probs equal the engine's."""
    _need_venv()
    from runner.cache import Cache
    from runner.data.models import resolve_model
    from runner.formats.artifacts import quantize

    cfg = _compose("model=hf", f"model.id={tiny_model_dir}", "format=openvino_int4", "hardware.threads=1")
    cache = Cache(cache_dir)
    model = resolve_model(cfg.model, cache)
    artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)
    ids = list(range(3, 67))
    loaded = OV.OpenvinoEngine().load(artifact, model, cfg.hardware)
    try:
        import numpy as np

        np.save(tmp_path / "engine.npy", loaded.logprobs(ids))
    finally:
        loaded.close()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(OV.venv_python()), "-c", RELOAD, str(artifact.path), json.dumps(ids), str(tmp_path / "engine.npy")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**env, "PYTHONNOUSERSITE": "1", "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["new"] == 8 and out["max_abs"] < 1e-4, out


def test_missing_venv_names_the_make_target(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(OV.VENV_ENV, str(tmp_path / "nowhere"))
    out = run_job(
        ["model=hf", f"model.id={tiny_model_dir}", "format=openvino_int8", *TINY_ARGS], tmp_path, tmp_path / "cache"
    )
    assert out.returncode == 2, out.line
    assert out.line.startswith("error: format.family: OpenVINO runs in its own venv"), out.line
    assert "fix: make venv-openvino" in out.line, out.line
    _, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not (tmp_path / "cache" / "artifacts").exists()


def test_int4_group_size_must_divide_the_rows(tiny_model_dir, cache_dir):
    from runner.cache import Cache
    from runner.data.models import resolve_model
    from runner.formats import get_format

    cfg = _compose("model=hf", f"model.id={tiny_model_dir}", "format=openvino_int4", "format.group_size=96")
    with pytest.raises(UserError, match="does not divide the model's hidden_size 256") as e:
        get_format("openvino").validate(cfg.format, resolve_model(cfg.model, Cache(cache_dir)))
    assert e.value.key == "format.group_size" and "\n" not in str(e.value)
