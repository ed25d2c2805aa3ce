"""Stages are one concept: a registry, one signature (context in -> result out), one logging path in job.py."""

import json

import pytest

from helpers import ROOT, TINY_ARGS, mlflow_runs
from runner import stages
from runner.errors import UserError
from runner.stages import StageResult


def test_plan_keeps_the_configured_order_with_quantize_first():
    assert stages.plan(["quantize", "benchmark", "evaluate"]) == ["quantize", "benchmark", "evaluate"]
    assert stages.plan(["evaluate", "quantize", "evaluate"]) == ["quantize", "evaluate"]
    for bad, named in ((["quantize", "nope"], "['nope']"), (["evaluate"], "['quantize']")):
        with pytest.raises(UserError) as e:
            stages.plan(bad)
        assert e.value.key == "stages" and f"unknown or missing stages {named}" in str(e.value)
        assert f"[{','.join(stages.STAGES)}]" in str(e.value) and "quantize,evaluate,tasks,benchmark" in str(e.value)


@pytest.fixture
def probes(monkeypatch):
    """Two extra stages, registered in-process, that record what they saw and return a result to log."""
    from runner import metrics
    from runner.quality import stream

    seen, built = [], []
    real_stream = stream.token_stream
    monkeypatch.setattr(stream, "token_stream", lambda *a: built.append(1) or real_stream(*a))

    def probe(name):
        def run(ctx):
            seen.append((name, ctx.artifact is not None, id(ctx.stream)))
            (ctx.run_dir / f"{name}.txt").write_text(name)
            return StageResult(
                metrics={f"test/{name}": len(seen)},
                params={f"test.{name}": ctx.artifact.manifest["format"]},
                tags={f"test.{name}": "ran"},
                files=[(ctx.run_dir / f"{name}.txt", "probes")],
                summary={name: len(seen)},
            )

        return run

    for name in ("probe_a", "probe_b"):
        stages.register(name, probe(name))
        monkeypatch.setitem(
            metrics.METRICS, f"test/{name}", metrics.Metric(f"test/{name}", "", "neither", "{:.0f}", name, "test")
        )
    yield seen, built
    for name in ("probe_a", "probe_b"):
        stages.unregister(name)


def test_stages_run_in_order_and_their_results_reach_mlflow(probes, tmp_path, cache_dir, tiny_model_dir):
    from hydra import compose, initialize_config_dir

    from runner import job
    from runner.config.schema import register_configs

    seen, built = probes
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "format=fp32",
                "model=hf",
                f"model.id={tiny_model_dir}",
                "stages=[quantize,probe_b,probe_a]",
                *TINY_ARGS,
                f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                f"cache.dir={cache_dir}",
            ],
        )
    (tmp_path / "job").mkdir()  # the job's Hydra run dir
    result = job.run(cfg, tmp_path / "job", None, [])
    assert result["status"] == "FINISHED", result
    assert [s[:2] for s in seen] == [("probe_b", True), ("probe_a", True)]  # configured order, after quantize
    assert seen[0][2] == seen[1][2] and len(built) == 1  # one token stream per job, shared

    client, (run,) = mlflow_runs(tmp_path / "mlflow.db")
    m, p, t = run.data.metrics, run.data.params, run.data.tags
    assert m["test/probe_b"] == 1 and m["test/probe_a"] == 2 and m["size/bytes"] > 0  # every stage's metrics
    assert p["test.probe_a"] == p["test.probe_b"] == "fp32" and t["test.probe_a"] == "ran"
    assert t["cache.artifact"] in ("hit", "miss") and t["artifact.path"]  # quantize's tags, same path
    assert sorted(f.path for f in client.list_artifacts(run.info.run_id, "probes")) == [
        "probes/probe_a.txt",
        "probes/probe_b.txt",
    ]
    summary = json.loads((tmp_path / "job" / "results.json").read_text())
    assert summary["probe_b"] == 1 and summary["probe_a"] == 2 and summary["manifest"]["format"] == "fp32"
