"""scripts/gpu_check.py's summary table, from step records shaped as a GPU run writes them (no GPU, no qrun)."""

import gpu_check  # scripts/ is on sys.path (tests/helpers.py)


def report(steps):
    return {"gpu": "NVIDIA H200", "mode": "run", "started": "2026-12-07", "wall_s": 310.0, "steps": steps}


def run(fmt, metrics, **params):
    return {"format": fmt, "status": "FINISHED", "metrics": metrics, "params": params, "tags": {}}


def rows(text):
    return [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| step")]


def test_each_run_is_a_row_with_its_metrics_and_how_it_ran():
    steps = [
        {
            "step": "probe",
            "budget_s": 30,
            "status": "ok",
            "wall_s": 9.1,
            "result": {"peak_vram_bytes": 9 * 2**30},
        },
        {
            "step": "exl2",
            "budget_s": 90,
            "status": "ok",
            "wall_s": 70.2,
            "jobs": [
                {
                    "status": "ok",
                    "wall_s": 70.2,
                    "runs": [
                        run(
                            "exl2_4_0bpw",
                            {"quality/ppl": 131000.0, "perf/peak_vram_bytes": 1.5 * 2**30, "quality/kld_mean": 0.0123},
                            **{"format.engine": "exllamav2", "eval.baseline": "bf16"},
                        )
                    ],
                }
            ],
        },
        {
            "step": "serving",
            "budget_s": 80,
            "status": "ok",
            "wall_s": 60.0,
            "jobs": [
                {
                    "status": "ok",
                    "wall_s": 30.0,
                    "runs": [
                        {
                            **run("bf16", {"serving/throughput_tok_s": 812.5}, **{"benchmark.concurrency": "8"}),
                            "tags": {"serving.server": "transformers"},
                        }
                    ],
                }
            ],
        },
    ]
    probe, exl2, serving = rows(gpu_check.summary_md(report(steps)))
    assert "saw 9.00 GiB of 8" in probe
    cells = [c.strip() for c in exl2.split("|")[1:-1]]
    assert cells[:5] == ["exl2", "exl2_4_0bpw", "ok", "70.2 / 90", "exllamav2, vs bf16"]
    assert "1.50" in cells and "1.31e+05" in cells and "0.0123" in cells  # VRAM in GiB, ppl, KLD
    assert "bf16 (8 users)" in serving and "server transformers" in serving and "812.5" in serving


def test_a_failed_or_skipped_step_says_why():
    steps = [
        {"step": "model", "budget_s": 45, "status": "failed (exit 1)", "wall_s": 3.0, "last_line": "OSError: no disk"},
        {
            "step": "gptq",
            "budget_s": 60,
            "status": "failed (exit 2)",
            "jobs": [
                {
                    "status": "failed (exit 2)",
                    "wall_s": 4.0,
                    "last_line": "error: format.group_size: 100 does not divide 4096 | fix: ...",
                    "runs": [],
                    "composed": {"format.name": "gptq_int4"},
                }
            ],
        },
        {"step": "exl2", "budget_s": 90, "status": "not available in the image (exllamav2)"},
    ]
    model, gptq, exl2 = rows(gpu_check.summary_md(report(steps)))
    assert "failed (exit 1): OSError: no disk" in model
    assert "gptq_int4" in gptq and "error: format.group_size: 100 does not divide 4096 / fix" in gptq  # no stray pipe
    assert "not available in the image (exllamav2)" in exl2
