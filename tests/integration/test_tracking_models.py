"""MLflow as its users expect it: a model-development experiment, child runs named after their format,
every quantized artifact an MLflow 3 LoggedModel with the run's metrics linked to it, and the files
uploaded to a real tracking server (loopback) that load in their engine without the runner."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
from omegaconf import OmegaConf

from helpers import ROOT, STOCK_LLAMA_CPP_PRELUDE, TINY_SWEEP_FORMATS, mlflow_runs, run_qrun

sys.path.insert(0, str(ROOT / "scripts"))
from ui_check import mlflow_process  # noqa: E402

KIND = ("mlflow.experimentKind", "custom_model_development")


def _engine(fmt: str) -> str:
    return "llama_cpp" if fmt.startswith("gguf_") else "torch"


def _tracker(uri: str):
    from runner.tracking import Tracker

    return Tracker(OmegaConf.create({"uri": uri, "experiment": "quant-runner"}))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_new_experiment_is_model_development(tmp_path):
    tracker = _tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    tags = tracker.client.get_experiment(tracker.experiment_id).tags
    assert tags.get(KIND[0]) == KIND[1]
    view = json.loads(tags["mlflow.sharedViewState.qrun"])  # the runs table's preselected columns
    assert (
        "metrics.`quality/ppl_delta_pct`" in view["selectedColumns"]
        and "attributes.`Models`" in view["selectedColumns"]
    )
    assert tracker.ui_url().endswith(
        f"/#/experiments/{tracker.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=qrun"
    )


def test_existing_experiment_gets_the_kind_but_keeps_one_set_by_hand(tmp_path):
    from mlflow.tracking import MlflowClient

    old, mine = f"sqlite:///{tmp_path / 'old.db'}", f"sqlite:///{tmp_path / 'mine.db'}"
    MlflowClient(old).create_experiment("quant-runner")  # as a runner before this change made it
    MlflowClient(mine).create_experiment("quant-runner", tags={KIND[0]: "genai_development"})
    tracker = _tracker(old)
    assert tracker.client.get_experiment(tracker.experiment_id).tags.get(KIND[0]) == KIND[1]
    tracker = _tracker(mine)
    assert tracker.client.get_experiment(tracker.experiment_id).tags.get(KIND[0]) == "genai_development"


def test_child_runs_are_named_after_format_and_engine(tiny_sweep):
    assert sorted(r.info.run_name for r in tiny_sweep.jobs) == sorted(f"{f} · {_engine(f)}" for f in TINY_SWEEP_FORMATS)
    assert tiny_sweep.q8_by_engine["torch"].info.run_name == "gguf_q8_0 · torch"


def test_each_artifact_is_a_logged_model_of_its_run(tiny_sweep):
    client, runs = mlflow_runs(tiny_sweep.db)
    every_job = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    models = client.search_logged_models([every_job[0].info.experiment_id])
    assert len(models) == len(every_job)  # one per job, also for two jobs sharing one cached artifact
    for run in tiny_sweep.jobs:
        (model,) = [m for m in models if m.source_run_id == run.info.run_id]
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
        assert str(model.status) == "READY" and model.tags["mlflow.model.isExternal"] == "true"
        p = model.params
        assert p["format"] == run.data.params["format.name"] == model.name
        assert p["engine"] == run.data.params["format.engine"]
        assert p["backend"] == {"torch": "torch+transformers", "llama_cpp": "llama_cpp_python"}[_engine(p["format"])]
        # local store: no upload, the uri names the cached folder; its files are what the params say
        folder = Path(urlparse(p["uri"]).path)
        assert p["uri"].startswith("file://") and folder.is_dir()
        assert "artifact" not in {a.path for a in client.list_artifacts(run.info.run_id)}
        files = sorted(f for f in folder.iterdir() if f.name in p["files"].split(","))
        assert int(p["bytes"]) == sum(f.stat().st_size for f in files)
        weights = [f for f in files if f.suffix in (".gguf", ".safetensors")]
        assert len(weights) == 1 and p["sha256"] == _sha256(weights[0])
        assert int(p["weight_bytes"]) == weights[0].stat().st_size == run.data.metrics["size/bytes"]


def test_run_metrics_are_linked_to_the_model_once(tiny_sweep):
    client, _ = mlflow_runs(tiny_sweep.db)
    for run in tiny_sweep.jobs:
        (model_id,) = [o.model_id for o in run.outputs.model_outputs]
        linked = {m.key: m.value for m in client.get_logged_model(model_id).metrics}
        for key in (
            "quality/ppl",
            "quality/kld_mean",
            "quality/top1_agree",
            "perf/decode_tok_s",
            "perf/peak_rss_bytes",
            "size/bytes",
            "size/bits_per_weight",
        ):
            assert linked[key] == pytest.approx(run.data.metrics[key]), key
        # linked as they were logged, not logged a second time: one point per metric in the run's history
        assert len(client.get_metric_history(run.info.run_id, "quality/ppl")) == 1


LOAD_WITHOUT_RUNNER = r"""
import hashlib, json, sys
from pathlib import Path
import mlflow
from mlflow.tracking import MlflowClient

uri, out = sys.argv[1], Path(sys.argv[2])
client = MlflowClient(tracking_uri=uri)
exp = client.get_experiment_by_name("quant-runner")
found = {}
for model in client.search_logged_models([exp.experiment_id]):
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.params["uri"], tracking_uri=uri,
                                                     dst_path=str(out / model.name)))
    if model.params["format"].startswith("gguf"):
        from llama_cpp import Llama
        weights = next(local.glob("*.gguf"))
        llm = Llama(model_path=str(weights), n_ctx=64, verbose=False)
        completion = llm("To be", max_tokens=4, temperature=0)
        loaded = {"n_vocab": llm.n_vocab(), "generated": completion["usage"]["completion_tokens"] >= 1}
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        weights = local / "model.safetensors"
        lm, tok = AutoModelForCausalLM.from_pretrained(local), AutoTokenizer.from_pretrained(local)
        ids = tok("To be, or not to be", return_tensors="pt")
        generated = lm.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        loaded = {"n_vocab": lm(**ids).logits.shape[-1], "generated": generated.shape[1] - ids.input_ids.shape[1] >= 1}
    found[model.params["format"]] = {"sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                                     "param_sha256": model.params["sha256"], **loaded}
print(json.dumps({"models": found, "runner_imported": any(m.split(".")[0] == "runner" for m in sys.modules)}))
"""


def _without_pythonpath():
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.slow
@pytest.mark.server
def test_upload_to_a_tracking_server_and_load_without_runner(tiny_model_dir, cache_dir, tmp_path):
    store = f"sqlite:///{tmp_path / 'server.db'}"
    extra = ["--artifacts-destination", str(tmp_path / "server_artifacts")]
    with mlflow_process("server", store, tmp_path / "server.log", extra) as base:
        proc = run_qrun(
            [
                "-m",
                "format=fp16,gguf_q8_0",
                "stages=[quantize]",
                "model=hf",
                f"model.id={tiny_model_dir}",
                "tracking=server",
                f"tracking.uri={base}",
            ],
            tmp_path,
            cache_dir,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        # a fresh interpreter that never imports the runner, outside the repository, as a colleague would
        load = subprocess.run(
            [sys.executable, "-c", STOCK_LLAMA_CPP_PRELUDE + LOAD_WITHOUT_RUNNER, base, str(tmp_path / "downloaded")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env=_without_pythonpath(),
        )
    assert load.returncode == 0, load.stderr[-3000:]
    result = json.loads(load.stdout.strip().splitlines()[-1])
    assert result["runner_imported"] is False
    assert set(result["models"]) == {"fp16", "gguf_q8_0"}
    for fmt, m in result["models"].items():
        assert m["sha256"] == m["param_sha256"], fmt  # the downloaded weights are the ones the model names
        assert m["n_vocab"] == 512 and m["generated"], fmt


def test_store_uris_resolve_against_the_launch_directory(tmp_path, monkeypatch):
    """Every way to name a local store gives an absolute URI of that store (file:/x once became file:///cwd/file%3A/x)."""
    from runner.tracking import resolve_uri

    monkeypatch.chdir(tmp_path)
    assert resolve_uri("file:/tmp/runs") == "file:///tmp/runs"
    assert resolve_uri("file:runs") == (tmp_path / "runs").as_uri()
    assert resolve_uri("file:///tmp/runs") == "file:///tmp/runs"
    assert resolve_uri("runs") == (tmp_path / "runs").as_uri()
    assert resolve_uri("sqlite:///m.db") == f"sqlite:///{tmp_path / 'm.db'}"
    assert resolve_uri("m.db") == f"sqlite:///{tmp_path / 'm.db'}"
    assert resolve_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_a_file_store_mlflow_refuses_is_a_one_line_error_with_the_fix(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from runner.errors import UserError
    from runner.tracking import Tracker

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(UserError) as e:
        Tracker(SimpleNamespace(uri=f"file:{tmp_path}/runs", experiment="x", upload_artifacts=False))
    assert e.value.key == "tracking.uri" and "sqlite:///" in e.value.fix and "MLFLOW_ALLOW_FILE_STORE" in e.value.fix
