"""Bad input: a clear one-line error naming the key, exit != 0, no run left RUNNING, nothing half-written."""

from conftest import TINY_ARGS, mlflow_runs, run_qrun


def _last_stderr_line(proc):
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def test_unknown_format(tmp_path, cache_dir):
    proc = run_qrun(["format=nope"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert "format/nope" in proc.stderr and "fp16" in proc.stderr  # lists the options
    assert not (tmp_path / "mlflow.db").exists()  # fails at composition, before any run


def test_wrong_type(tmp_path, cache_dir):
    proc = run_qrun(["eval.n_tokens=lots"], tmp_path, cache_dir)
    assert proc.returncode != 0 and "eval.n_tokens" in proc.stderr


def test_typo_key(tmp_path, cache_dir):
    proc = run_qrun(["benchmark.repeat=3"], tmp_path, cache_dir)
    assert proc.returncode != 0 and "repeat" in proc.stderr


def test_missing_model_dir(tmp_path, cache_dir):
    proc = run_qrun(["model=hf", f"model.id={tmp_path}/no/such/model"], tmp_path, cache_dir)
    assert proc.returncode == 2
    line = _last_stderr_line(proc)
    assert line.startswith("error: model.id:") and "does not exist" in line and "fix:" in line
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs] == ["FAILED"]


def test_empty_corpus(tmp_path, cache_dir, tiny_model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    proc = run_qrun(["model=hf", f"model.id={tiny_model_dir}", "eval.corpus.source=file", f"eval.corpus.path={empty}",
                     *TINY_ARGS], tmp_path, cache_dir)
    assert proc.returncode == 2
    line = _last_stderr_line(proc)
    assert line.startswith("error: eval.corpus:") and "empty" in line
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "error.txt" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert not list(cache_dir.glob("**/.tmp-*")), "a failed job left a temp entry in the cache"


def test_corpus_shorter_than_n_tokens(tmp_path, cache_dir, tiny_model_dir):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be, that is the question.")
    proc = run_qrun(["model=hf", f"model.id={tiny_model_dir}", "eval.corpus.source=file", f"eval.corpus.path={short}",
                     *TINY_ARGS], tmp_path, cache_dir)
    assert proc.returncode == 2 and _last_stderr_line(proc).startswith("error: eval.n_tokens:")


def test_failed_job_in_a_sweep_marks_it_failed_and_others_run(tmp_path, cache_dir, tiny_model_dir):
    proc = run_qrun(["-m", "model=hf", f"model.id={tiny_model_dir}", "format=fp32,fp16", "format.dtype=float32,int3",
                     "stages=[quantize]", *TINY_ARGS], tmp_path, cache_dir)
    assert proc.returncode == 1
    assert "job(s) of the sweep failed" in _last_stderr_line(proc)
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FAILED", "FAILED", "FAILED", "FINISHED", "FINISHED"]  # parent + 2 bad dtypes failed
    assert "RUNNING" not in statuses
    assert "FAILED" in proc.stdout and "format.dtype" in proc.stdout


def test_unreachable_tracking_server(tmp_path, cache_dir):
    proc = run_qrun(["tracking=server", "tracking.uri=http://127.0.0.1:9"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert "tracking.uri" in proc.stderr and "not reachable" in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/results.json"))
