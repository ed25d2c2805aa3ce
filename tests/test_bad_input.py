"""Bad input: a clear one-line error naming the key, exit != 0, no run left RUNNING, nothing half-written.

README.md "Bad input" lists every case and the test that covers it.
"""
import json
import os

import pytest

from conftest import TINY_ARGS, mlflow_runs, run_qrun


def _last_stderr_line(proc):
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else ""


def test_unknown_format(tmp_path, cache_dir):
    proc = run_qrun(["format=nope"], tmp_path, cache_dir)
    assert proc.returncode != 0
    assert "format/nope" in proc.stderr and "fp16" in proc.stderr  # lists the options
    assert "_schema" not in proc.stderr and "schema/format" not in proc.stderr  # schemas are not options
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
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert _last_stderr_line(proc).startswith("error: tracking.uri: ") and "not reachable" in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/results.json"))


def _fails_before_any_work(args, tmp_path, key):
    """Exit 2, one line `error: <key>: ... -- fix: ...`, the job's run FAILED with error.txt, nothing in the cache."""
    cache = tmp_path / "cache"
    proc = run_qrun(args, tmp_path, cache)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _last_stderr_line(proc)
    assert line.startswith(f"error: {key}: ") and " -- fix: " in line, line
    assert "Traceback" not in proc.stderr
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "error.txt" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert not list(cache.glob("models/*")) and not list(cache.glob("artifacts/*")), "work started before the check"
    assert not list(cache.glob("**/.tmp-*")), "a failed job left a temp entry in the cache"
    return line


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
QUICK = ["eval=quick", "benchmark=quick"]
CONFIG_CASES = [  # (overrides, key, words in the line)
    (["hardware.threads=0"], "hardware.threads", [f"between 1 and {CORES}"]),
    (["hardware.threads=100000"], "hardware.threads", [f"{CORES} usable core", f"between 1 and {CORES}"]),
    ([f"hardware.threads={CORES + 1}"], "hardware.threads", [f"between 1 and {CORES}"]),
    (["eval.n_tokens=0"], "eval.n_tokens", ["at least 2 tokens"]),
    (["eval.kld_topk=0"], "eval.kld_topk", ["outside 1..1024"]),
    (["eval.n_tokens=256", "eval.ctx_len=512", "eval.stride=512"], "eval.ctx_len", ["eval.n_tokens=256"]),
]


@pytest.mark.parametrize("args,key,words", CONFIG_CASES, ids=[" ".join(a) for a, _, _ in CONFIG_CASES])
def test_values_that_cannot_work_fail_before_any_work(args, key, words, tmp_path):
    line = _fails_before_any_work(args + QUICK, tmp_path, key)
    assert all(w in line for w in words), line


def _small_llama_folder(folder):
    """config.json of a Llama and one real (tiny) safetensors file: enough to reach the checks on the files."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                    "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
                                                    "num_hidden_layers": 1, "num_attention_heads": 2}))
    save_file({"model.embed_tokens.weight": torch.zeros(64, 16)}, str(folder / "model.safetensors"))
    return folder


def test_corrupt_safetensors_names_model_id(tmp_path):
    model = _small_llama_folder(tmp_path / "model")
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])  # an interrupted copy
    line = _fails_before_any_work(["model=hf", f"model.id={model}", "stages=[quantize]"], tmp_path, "model.id")
    assert "model.safetensors" in line and "not a readable safetensors file" in line


def test_invalid_config_json_names_model_id(tmp_path):
    model = _small_llama_folder(tmp_path / "model")
    (model / "config.json").write_text('{"model_type": "llama", ')
    line = _fails_before_any_work(["model=hf", f"model.id={model}", "stages=[quantize]"], tmp_path, "model.id")
    assert "config.json" in line and "JSON" in line


def test_model_that_needs_remote_code_names_trust_remote_code(tmp_path):
    model = _small_llama_folder(tmp_path / "model")
    (model / "config.json").write_text(json.dumps({
        "model_type": "qrun_custom_arch",
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.CustomModel"},
    }))
    line = _fails_before_any_work(["model=hf", f"model.id={model}", "stages=[quantize]"], tmp_path, "model.trust_remote_code")
    assert "model.trust_remote_code=true" in line  # refused by default; the fix says how to opt in


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_unwritable_sqlite_tracking_uri(tmp_path, cache_dir, sweep):
    (tmp_path / "a_file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/a_file/mlflow.db"  # its parent is a file: unwritable even for root
    proc = run_qrun((["-m", "format=fp32,fp16"] if sweep else []) + [f"tracking.uri={uri}"], tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _last_stderr_line(proc)
    assert line.startswith("error: tracking.uri: ") and " -- fix: " in line, line
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*/*/*/results.json"))
