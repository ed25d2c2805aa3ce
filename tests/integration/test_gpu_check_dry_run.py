"""scripts/gpu_check.sh --dry-run: every step of the CUDA check composes on a machine without a GPU.

The check itself runs on a GPU machine with no package index, where a step whose qrun command no longer composes
would cost a machine start to find out; the dry run composes each one with `qrun ... --cfg job` here instead.
"""

import json
import os
import subprocess
import sys

import gpu_check  # scripts/ is on sys.path (tests/helpers.py)

from helpers import ROOT

STEPS = ["probe", "model", "bf16", "gptq", "awq", "serving", "exl2", "vllm"]


def dry_run(tmp_path, *args):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    cmd = ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path / "out")]
    cmd += ["--work", str(tmp_path / "work"), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_every_step_composes(tmp_path):
    proc = dry_run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["mode"] == "dry-run"
    assert [s["step"] for s in report["steps"]] == STEPS
    for step in report["steps"]:
        assert step["status"] == "dry-run", step
        assert step["jobs"] and all(j["rc"] == 0 and j["problems"] == [] for j in step["jobs"]), step
        assert json.loads((tmp_path / "work" / "steps" / f"{step['step']}.json").read_text())["status"] == "dry-run"
    jobs = {s["step"]: s["jobs"] for s in report["steps"]}
    # what each step runs, as qrun composed it
    assert jobs["gptq"][0]["composed"]["format.name"] == "gptq_int4"
    assert jobs["awq"][0]["composed"]["format.backend"] == "llmcompressor"
    assert jobs["exl2"][0]["composed"]["format.bpw"] == 4.0
    assert [j["composed"]["benchmark.concurrency"] for j in jobs["serving"]] == [1, 8]
    assert {j["composed"]["format.server"] for j in jobs["serving"]} == {"transformers"}
    assert jobs["vllm"][0]["composed"]["format.engine"] == "vllm"
    assert all(j["composed"]["hardware.device"] == "cuda" for s in STEPS[2:] for j in jobs[s])
    assert jobs["model"][0]["checked"]["parameters"] > 1.4e9  # Llama-3.1-8B's shapes, 2 layers, on the meta device
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert all(f"| {s} |" in summary for s in STEPS)
    assert "budgets" in proc.stdout and "$ " in proc.stdout  # the plan and the commands


def test_a_step_that_no_longer_composes_fails_the_dry_run(tmp_path, monkeypatch):
    def broken_plan():
        steps = [s for s in real_plan() if s.name in ("bf16", "gptq")]
        steps[0].jobs[0].overrides.append("format=no_such_format")  # qrun exits non-zero
        steps[1].jobs[0].expect["format.name"] = "gptq_int8"  # composes, but not what the step needs
        return steps

    real_plan = gpu_check.plan
    monkeypatch.setattr(gpu_check, "plan", broken_plan)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    rc = gpu_check.main(["--dry-run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert rc == 1
    steps = {s["step"]: s for s in json.loads((tmp_path / "out" / "gpu_check.json").read_text())["steps"]}
    assert steps["bf16"]["status"] == steps["gptq"]["status"] == "composition failed"
    assert "exited" in steps["bf16"]["jobs"][0]["problems"][0]
    assert steps["gptq"]["jobs"][0]["problems"] == ["format.name: composed 'gptq_int4', the step needs 'gptq_int8'"]
