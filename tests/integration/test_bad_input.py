"""Bad input: a clear one-line error naming the key, exit 2, no run left RUNNING, nothing half-written.

Each job runs in-process (helpers.run_job: qrun's job without its process); tests/integration/test_cli_errors.py
checks what the real process prints. docs/bad-input.md lists every case and the test that covers it.
"""

import json
import os

import pytest

from helpers import TINY_ARGS, mlflow_runs, run_job


def test_missing_model_dir(tmp_path, cache_dir):
    out = run_job(["model=hf", f"model.id={tmp_path}/no/such/model"], tmp_path, cache_dir)
    assert out.returncode == 2
    assert out.line.startswith("error: model.id:") and "does not exist" in out.line and "fix:" in out.line
    _, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]


def test_empty_corpus(tmp_path, cache_dir, tiny_model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    out = run_job(
        ["model=hf", f"model.id={tiny_model_dir}", "eval.corpus.source=file", f"eval.corpus.path={empty}", *TINY_ARGS],
        tmp_path,
        cache_dir,
    )
    assert out.returncode == 2
    assert out.line.startswith("error: eval.corpus:") and "empty" in out.line
    client, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "error.txt" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert not list(cache_dir.glob("**/.tmp-*")), "a failed job left a temp entry in the cache"


def test_corpus_shorter_than_n_tokens(tmp_path, cache_dir, tiny_model_dir):
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be, that is the question.")
    out = run_job(
        ["model=hf", f"model.id={tiny_model_dir}", "eval.corpus.source=file", f"eval.corpus.path={short}", *TINY_ARGS],
        tmp_path,
        cache_dir,
    )
    assert out.returncode == 2 and out.line.startswith("error: eval.n_tokens:")


def test_unreachable_tracking_server(tmp_path, cache_dir):
    out = run_job(["tracking=server", "tracking.uri=http://127.0.0.1:9"], tmp_path, cache_dir)
    assert out.returncode == 2 and out.result is None  # refused before any run could exist
    assert out.line.startswith("error: tracking.uri: ") and "not reachable" in out.line
    assert not (tmp_path / "job" / "results.json").exists()


def _fails_before_any_work(args, tmp_path, key):
    """Exit 2, one line `error: <key>: ... -- fix: ...`, the job's run FAILED with error.txt, nothing in the cache."""
    cache = tmp_path / "cache"
    out = run_job(args, tmp_path, cache)
    assert out.returncode == 2, out.line
    line = out.line
    assert line.startswith(f"error: {key}: ") and " -- fix: " in line and "\n" not in line, line
    client, runs = mlflow_runs(out.db)
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
    (["eval.kld_topk=0"], "eval.kld_topk", ["outside 1..16384"]),
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
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForCausalLM"],
                "vocab_size": 64,
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
            }
        )
    )
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
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qrun_custom_arch",
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomModel",
                },
            }
        )
    )
    line = _fails_before_any_work(
        ["model=hf", f"model.id={model}", "stages=[quantize]"], tmp_path, "model.trust_remote_code"
    )
    assert "model.trust_remote_code=true" in line  # refused by default; the fix says how to opt in


def test_unwritable_sqlite_tracking_uri(tmp_path, cache_dir):
    (tmp_path / "a_file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path}/a_file/mlflow.db"  # its parent is a file: unwritable even for root
    out = run_job([f"tracking.uri={uri}"], tmp_path / "launch", cache_dir)
    assert out.returncode == 2 and out.result is None
    assert out.line.startswith("error: tracking.uri: ") and " -- fix: " in out.line, out.line


def test_unwritable_sqlite_tracking_uri_stops_a_sweep_before_its_parent_run(tmp_path, capsys):
    from omegaconf import OmegaConf

    from helpers import compose
    from runner.sweep import MlflowSweepCallback

    (tmp_path / "a_file").write_text("not a folder")
    cfg = compose([f"tracking.uri=sqlite:///{tmp_path}/a_file/mlflow.db"])
    OmegaConf.set_struct(cfg, False)
    cfg.hydra = {"sweep": {"dir": str(tmp_path / "sweep")}, "overrides": {"task": []}}
    with pytest.raises(SystemExit) as e:
        MlflowSweepCallback().on_multirun_start(cfg)
    assert e.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: tracking.uri: ") and " -- fix: " in line and "\n" not in line, line
