"""qrun-report: the table, the plots and the recommendation, through a real MLflow store (synthetic seed runs)."""

import json
import subprocess

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from helpers import QRUN, ROOT
from runner.report.plots import pareto_front

# Synthetic: hand-written numbers (see its "_comment"); they test the recommendation logic only.
SEED = json.loads((ROOT / "tests" / "data" / "seed_runs.json").read_text())


@pytest.fixture
def store(tmp_path):
    """The synthetic runs (hand-written numbers, not measured) logged as one sweep into a SQLite MLflow store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("quant-runner", artifact_location=(tmp_path / "mlartifacts").as_uri())
    parent = client.create_run(exp, run_name="sweep", tags={"qrun.sweep": "true"}).info.run_id
    for i, rec in enumerate(SEED["runs"]):
        run = client.create_run(
            exp, run_name=rec["format"], tags={"mlflow.parentRunId": parent, "qrun.job_key": f"job{i}"}
        )
        params = {"format.name": rec["format"], "format.engine": rec["engine"], "hardware.name": rec["hardware"]}
        if "backend" in rec:
            params["format.backend"] = rec["backend"]
        client.log_batch(
            run.info.run_id,
            params=[Param(k, v) for k, v in params.items()],
            metrics=[Metric(k, float(v), 0, 0) for k, v in rec["metrics"].items()],
        )
        client.set_terminated(run.info.run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return tmp_path, uri, parent


def _report(tmp_path, uri, *args):
    return subprocess.run(
        QRUN[:1] + ["-m", "runner.report", *args, "--tracking-uri", uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


SEED_CONSTRAINTS = ["--max-latency-p95", "3", "--min-throughput", "100"]


def test_gpu_budget_allows_awq_then_gptq_then_gguf(store):
    tmp_path, uri, _ = store
    proc = _report(tmp_path, uri, "recommend", "--hardware", "rtx3090x2", *SEED_CONSTRAINTS)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("recommend awq_int4 [gptqmodel] @vllm") and "next: gptq_int4 [gptqmodel] @vllm" in first
    assert "rejected fp16 @vllm: p95 3.60 s > 3 s" in proc.stdout
    assert "rejected int8 [bitsandbytes]: p95 29.00 s > 3 s, 82.0 tok/s < 100" in proc.stdout
    # a tighter memory budget (one 24 GB card) leaves only GGUF on the GPU
    proc = _report(tmp_path, uri, "recommend", "--hardware", "rtx3090x2", "--memory-gb", "22", *SEED_CONSTRAINTS)
    assert proc.stdout.startswith("recommend gguf_q4_k_m"), proc.stdout


def test_cpu_only_gets_gguf(store):
    tmp_path, uri, _ = store
    proc = _report(tmp_path, uri, "recommend", "--hardware", "cpu", "--memory-gb", "16", "--min-throughput", "10")
    assert proc.returncode == 0 and proc.stdout.startswith("recommend gguf_q4_k_m"), proc.stdout + proc.stderr
    assert "rejected fp16: needs 16.39 GiB > 16.00 GiB" in proc.stdout


def test_no_feasible_format_names_the_constraints(store):
    tmp_path, uri, _ = store
    proc = _report(tmp_path, uri, "recommend", "--hardware", "cpu", "--max-latency-p95", "1")
    assert proc.returncode == 1
    assert "no format of 4 meets every constraint" in proc.stdout and "p95 5.10 s > 1 s" in proc.stdout


def test_unknown_experiment_and_hardware(store):
    tmp_path, uri, _ = store
    proc = _report(tmp_path, uri, "--experiment", "nope")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --experiment: no experiment 'nope'")
    proc = _report(tmp_path, uri, "recommend", "--hardware", "tpu9000")
    assert proc.returncode == 2 and "--hardware" in proc.stderr and "rtx3090x2" in proc.stderr


def test_table_files_and_plots_are_logged_to_the_sweep(store):
    tmp_path, uri, parent = store
    proc = _report(tmp_path, uri, "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert sum(line.startswith("| ") for line in proc.stdout.splitlines()) == len(SEED["runs"]) + 1  # header + rows
    assert "| awq_int4 [gptqmodel] @vllm | rtx3090x2 | 5730.0 |" in proc.stdout
    for name in ("table.md", "table.csv", "quality_vs_size.png", "quality_vs_speed.png", "quality_vs_throughput.png"):
        path = tmp_path / "rep" / name
        assert path.exists() and path.stat().st_size > 100
    assert (tmp_path / "rep" / "quality_vs_size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "rep" / "table.csv").read_text().splitlines()) == len(SEED["runs"]) + 1
    logged = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(parent, "report")}
    assert "report/quality_vs_size.png" in logged and "report/table.md" in logged


def test_seed_fixture_says_it_is_synthetic():
    """seed_runs.json is a synthetic fixture with hand-written numbers; it tests the recommendation logic only.

    Its GPU runs hold metrics no real run logs together (offline decode speed and serving/* load metrics), so nothing
    may read them as measurements: the file must say so first.
    """
    assert SEED["_comment"].startswith("SYNTHETIC FIXTURE: hand-written numbers")
    gpu_runs = [r["metrics"] for r in SEED["runs"] if r["hardware"] != "cpu"]
    assert gpu_runs and all({"perf/decode_tok_s", "serving/requests_per_s"} <= set(m) for m in gpu_runs)


def test_pareto_front():
    pts = [(1, 5, "a"), (2, 3, "b"), (3, 4, "c"), (4, 1, "d"), (2.5, 3, "e")]
    assert [p[2] for p in pareto_front(pts)] == ["a", "b", "d"]
