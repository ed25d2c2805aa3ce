"""lm-eval tasks: the shipped offline tasks, the adapter against lm-eval's own `hf` model, resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from helpers import ROOT, TINY_ARGS, mlflow_runs, run_qrun

LIMIT = 24
pytestmark = pytest.mark.tasks


def _tiny(cache_dir, tiny_model_dir, format_name):
    """(model, artifact, hardware) of the tiny model in format_name, made through the runner's own quantize stage."""
    from hydra import compose, initialize_config_dir

    from runner.cache import Cache
    from runner.config.schema import register_configs
    from runner.data.models import resolve_model
    from runner.formats.artifacts import quantize

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                f"format={format_name}",
                "model=hf",
                f"model.id={tiny_model_dir}",
                f"cache.dir={cache_dir}",
                "hardware.threads=1",
            ],
        )
    cache = Cache(cache_dir)
    model = resolve_model(cfg.model, cache)
    return model, quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache), cfg.hardware


@pytest.fixture(scope="module")
def tiny_fp32(cache_dir, tiny_model_dir):
    return _tiny(cache_dir, tiny_model_dir, "fp32")


def test_generator_is_deterministic_matches_the_shipped_files_and_uses_other_texts(tmp_path, shakespeare_dir):
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_tasks

    sizes = make_tasks.make(shakespeare_dir, tmp_path / "a")
    make_tasks.make(shakespeare_dir, tmp_path / "b")
    shipped = ROOT / "runner" / "tasks" / "data"
    for task, n in sizes.items():
        a = (tmp_path / "a" / f"{task}.jsonl").read_bytes()
        assert a == (tmp_path / "b" / f"{task}.jsonl").read_bytes() == (shipped / f"{task}.jsonl").read_bytes()
        assert n == make_tasks.N_ITEMS
    used = {w for works in make_tasks.WORKS.values() for w in works}
    for conf in ("calibration/packaged.yaml", "eval/default.yaml"):
        other = set(yaml.safe_load((ROOT / "conf" / conf).read_text())["corpus"]["works"])
        assert not used & other, conf
    item = json.loads((shipped / "shakespeare_lastword.jsonl").read_text().splitlines()[0])
    assert item["target"].lower() in item["context"].lower()  # LAMBADA's property: guessable from the context


def _hf_samples(artifact, task: str):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from runner.tasks.registry import task_spec

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={artifact.path},dtype=float32,device=cpu",
        batch_size=1,
        tasks=[task_spec(task)],
        limit=LIMIT,
        log_samples=True,
        task_manager=TaskManager(include_defaults=False),
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    return sorted(out["samples"][task], key=lambda s: s["doc_id"])


@pytest.mark.parametrize("task", ["shakespeare_lastword", "shakespeare_nextline"])
def test_adapter_equals_lm_evals_hf_model_item_for_item(tmp_path, tiny_fp32, task):
    from runner.cache import Cache
    from runner.tasks.run import run_tasks

    model, artifact, hardware = tiny_fp32
    ours = run_tasks(artifact, model, "torch", [task], LIMIT, hardware, Cache(tmp_path / "c"))[task]
    theirs = _hf_samples(artifact, task)
    assert ours.n == len(theirs) == LIMIT and not ours.cache_hit
    assert ours.items == [float(s["acc"]) for s in theirs]
    again = run_tasks(artifact, model, "torch", [task], LIMIT, hardware, Cache(tmp_path / "c"))[task]
    assert again.cache_hit and again.items == ours.items  # a re-run costs nothing


def test_adapter_generates_greedily_like_hf(tiny_fp32):
    from lm_eval.api.instance import Instance

    from runner.engines import get_engine
    from runner.tasks.lm import EngineLM, task_tokenizer

    model, artifact, hardware = tiny_fp32
    loaded = get_engine("torch").load(artifact, model, hardware)
    tok = task_tokenizer(model, None)
    lm = EngineLM(loaded, tok)
    prompt = "KING.\nWhat say you, my lord?"
    [text] = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": ["\n\n"], "max_gen_toks": 12}), 0)])
    ids = lm.tok_encode(prompt)
    import torch

    expect = loaded.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids) :].tolist()
    if tok.eos_id in expect:
        expect = expect[: expect.index(tok.eos_id)]
    assert text == tok.decode(expect).split("\n\n")[0]
    [rolling] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (prompt,), 0)])
    lp = loaded.logprobs([lm.prefix_token_id] + tok.encode(prompt))
    assert rolling == pytest.approx(sum(lp[i, t] for i, t in enumerate(tok.encode(prompt))), abs=1e-4)


CHILD = """
import sys, pickle
from runner.cache import Cache
from runner.tasks.run import run_tasks
model, artifact, hardware = pickle.load(open(sys.argv[1], "rb"))
run_tasks(artifact, model, "torch", ["shakespeare_nextline"], int(sys.argv[3]), hardware, Cache(sys.argv[2]))
"""


def test_a_task_killed_midway_resumes_from_its_kept_answers(tmp_path, tiny_fp32):
    import pickle

    from omegaconf import OmegaConf

    from runner.cache import Cache
    from runner.tasks.run import PARTIAL, answers_key, run_tasks, task_key

    model, artifact, hardware = tiny_fp32
    limit = 30
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((model, artifact, OmegaConf.create(OmegaConf.to_container(hardware, resolve=True)))))
    cache = Cache(tmp_path / "c")
    answers = answers_key(artifact, "torch", "cpu", "shakespeare_nextline", None)
    items = cache.memo_dir / PARTIAL / answers / "items.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(args), str(tmp_path / "c"), str(limit)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None:
        if items.exists() and len(items.read_text().splitlines()) >= 20:
            break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()[-2000:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    kept = len(items.read_text().splitlines())
    assert (
        20 <= kept < 4 * limit
        and cache.get("tasks", task_key(artifact, "torch", "cpu", "shakespeare_nextline", limit, None)) is None
    )

    resumed = run_tasks(artifact, model, "torch", ["shakespeare_nextline"], limit, hardware, cache)[
        "shakespeare_nextline"
    ]
    fresh = run_tasks(artifact, model, "torch", ["shakespeare_nextline"], limit, hardware, Cache(tmp_path / "d"))[
        "shakespeare_nextline"
    ]
    assert resumed.resumed >= kept - 1 and fresh.resumed == 0  # the last line of a killed run may be cut short
    assert resumed.items == fresh.items and resumed.n == limit
    assert items.exists()  # kept for a run with a larger eval.task_limit (deleted once a task ran without a limit)


def test_hub_task_offline_is_one_line_naming_eval_tasks_and_the_offline_tasks(
    tmp_path, cache_dir, tiny_model_dir, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fresh = tmp_path / "cache"  # refused before any work: nothing quantized
    proc = run_qrun(
        [
            "format=fp32",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize,tasks]",
            "hardware.threads=1",
            "eval.tasks=[hellaswag]",
            *TINY_ARGS,
        ],
        tmp_path,
        fresh,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert "eval.tasks" in line and "hellaswag" in line and "shakespeare_lastword,shakespeare_nextline" in line
    assert not (fresh / "artifacts").exists()


def test_tasks_stage_logs_accuracy_interval_and_retained_share(tmp_path, cache_dir, tiny_model_dir):
    proc = run_qrun(
        [
            "format=fp32",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize,tasks]",
            "hardware.threads=1",
            "eval.tasks=[shakespeare_nextline]",
            f"eval.task_limit={LIMIT}",
            *TINY_ARGS,
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, (run,) = mlflow_runs(tmp_path / "mlflow.db")
    m = run.data.metrics
    acc = m["task/shakespeare_nextline/acc"]
    assert m["task/shakespeare_nextline/acc_ci_low"] <= acc <= m["task/shakespeare_nextline/acc_ci_high"]
    assert m["task/shakespeare_nextline/acc_stderr"] > 0
    assert m["task/shakespeare_nextline/acc_retained"] == 1.0  # fp32 is the baseline itself


def _request_keys(cache, artifact, engine: str, task: str) -> set:
    """The keys of the answers a task run with a limit keeps: each a hash of one request's token ids."""
    from runner.tasks.run import PARTIAL, answers_key

    items = cache.memo_dir / PARTIAL / answers_key(artifact, engine, "cpu", task, None) / "items.jsonl"
    return {json.loads(line)[0] for line in items.read_text().splitlines()}


def test_a_gguf_artifact_of_an_hf_model_answers_the_same_token_ids_as_the_baseline(
    tmp_path, cache_dir, tiny_model_dir, tiny_fp32, monkeypatch
):
    """The base model is an HF folder: its GGUF's items are tokenized by the HF tokenizer and handed to llama.cpp as
    ids, so both formats answer the very same requests (before: llama.cpp's tokenizer of the converted file)."""
    import runner.tasks.lm as lm
    from runner.cache import Cache
    from runner.tasks.run import run_tasks

    model, fp32, hardware = tiny_fp32
    _, gguf, _ = _tiny(cache_dir, tiny_model_dir, "gguf_f16")
    used = []
    real = lm.task_tokenizer

    def spy(*args, **kwargs):
        tok = real(*args, **kwargs)
        used.append(tok.name)
        return tok

    monkeypatch.setattr(lm, "task_tokenizer", spy)
    cache = Cache(tmp_path / "c")
    task = "shakespeare_lastword"
    base = run_tasks(fp32, model, "torch", [task], LIMIT, hardware, cache)[task]
    mine = run_tasks(gguf, model, "llama_cpp", [task], LIMIT, hardware, cache)[task]
    assert used == ["hf", "hf"]
    assert _request_keys(cache, gguf, "llama_cpp", task) == _request_keys(cache, fp32, "torch", task)
    assert mine.n == base.n == LIMIT


def test_a_task_sweep_shows_flips_with_intervals_beside_accuracy(tmp_path, cache_dir, tiny_model_dir):
    proc = run_qrun(
        [
            "-m",
            "format=fp16,gguf_q2_k",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize,tasks]",
            "hardware.threads=1",
            "eval.tasks=[shakespeare_nextline]",
            f"eval.task_limit={LIMIT}",
            *TINY_ARGS,
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)  # the sweep's table, for the record (pytest -s)
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    t = "task/shakespeare_nextline/"
    for run in [r for r in runs if "format.name" in r.data.params]:
        m = run.data.metrics
        assert m[t + "flips"] == pytest.approx(m[t + "flips_c2i"] + m[t + "flips_i2c"])
        assert m[t + "acc_delta"] == pytest.approx(m[t + "flips_i2c"] - m[t + "flips_c2i"])
        for name in ("flips", "flips_c2i", "flips_i2c", "acc_delta", "acc_retained"):
            assert m[t + name + "_ci_low"] <= m[t + name] <= m[t + name + "_ci_high"], (run.data.params, name)
    header = next(line for line in proc.stdout.splitlines() if line.startswith("format"))
    assert "c→i" in header and "i→c" in header and "kept" in header
    assert "c→i / i→c: the share of items the baseline answers correctly" in proc.stdout
