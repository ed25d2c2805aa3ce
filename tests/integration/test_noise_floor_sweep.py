"""The noise floor row through a real sweep of the tiny model: fp16 is fp32's own weights in another dtype, scored on
the same tokens; the summary and qrun-report show it as the floor row and compare every format with it on the same
windows (runner/report/floor.py)."""

import subprocess

from helpers import QRUN, TINY_ARGS, qrun_env, run_qrun


def test_a_sweep_with_eval_noise_floor_shows_the_floor_row_in_the_summary_and_the_report(
    tmp_path, cache_dir, tiny_model_dir
):
    proc = run_qrun(
        [
            "-m",
            "format=fp32,fp16,gguf_q2_k",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize,evaluate]",
            "eval.noise_floor=fp16",
            *TINY_ARGS,
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("format "))
    assert "vs floor" in lines[header]
    rows = {line.split()[0]: line for line in lines[header + 2 : header + 5]}
    assert "  baseline  " in rows["fp32"] and "  floor  " in rows["fp16"]
    # 2-bit weights lose far more than a change of dtype: their paired KLD difference to the floor is positive
    assert "  noise  " not in rows["gguf_q2_k"] and "  +" in rows["gguf_q2_k"]
    assert any(line.startswith("vs floor: the paired difference of KLD to the noise floor fp16") for line in lines)
    assert "## Noise floor" in proc.stdout
    report = subprocess.run(
        QRUN[:1] + ["-m", "runner.report", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=qrun_env(cache_dir),
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert "| vs floor |" in report.stdout and "| floor |" in report.stdout
