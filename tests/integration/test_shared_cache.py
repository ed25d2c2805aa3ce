"""A cache shared by jobs running at once: what they all need is built once, the others wait and use it."""

import re

import pytest

from helpers import mlflow_runs, run_qrun, side_by_side_sweep

FORMATS = ["fp16", "bf16", "gguf_f16", "gguf_q8_0", "gguf_q4_0", "gguf_q4_k_m", "gguf_q6_k", "gguf_q2_k"]


@pytest.mark.slow
def test_eight_concurrent_jobs_build_the_shared_reference_once(tmp_path, empty_cache, tiny_model_dir):
    """Eight jobs in eight processes at once all need the fp32 baseline, its reference pass and the token stream;
    the GGUF six also need the f16 GGUF. Each of those entries is built by one job (its log says `built ...`)."""
    proc = run_qrun(
        [
            "-m",
            "hydra/launcher=local_parallel",
            f"hydra.launcher.n_jobs={len(FORMATS)}",
            *side_by_side_sweep(FORMATS, tiny_model_dir),
        ],
        tmp_path,
        empty_cache,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == len(FORMATS) and all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["qrun.pid"] for r in children}) > 1  # the jobs really ran in several processes

    logs = "\n".join(p.read_text() for p in (tmp_path / "multirun").rglob("*.log"))
    built = re.findall(r"built (\w+)/\w+", logs)
    assert built.count("references") == 1, built
    assert built.count("gguf_base") == 1, built
    assert built.count("tokens") == 1, built
    assert len(re.findall(r"quantizing \S+ to fp32\b", logs)) == 1
    assert len(list(empty_cache.glob("references/*"))) == 1
    assert not list(empty_cache.glob("*/.tmp-*"))  # no lock or temp left behind
