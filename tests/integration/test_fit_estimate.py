"""The pre-flight fit estimate against the memory the tiny sweep's offline benchmarks measured (torch, llama.cpp)."""

import pytest

from helpers import TINY_SWEEP_FORMATS
from runner import metrics as M


@pytest.mark.parametrize("fmt", TINY_SWEEP_FORMATS)
def test_the_estimate_is_within_a_quarter_of_the_measured_peak(tiny_sweep, fmt):
    m = tiny_sweep.by_format[fmt].data.metrics
    ratio = m[M.MEMORY_FIT_ESTIMATE_OVER_MEASURED]
    assert ratio == pytest.approx(m[M.MEMORY_FIT_ESTIMATE_BYTES] / m[M.PERF_PEAK_RSS_BYTES])
    assert 0.75 <= ratio <= 1.25, (fmt, ratio, m[M.MEMORY_FIT_ESTIMATE_BYTES], m[M.PERF_PEAK_RSS_BYTES])


def test_a_format_the_scenarios_budget_cannot_hold_is_skipped_before_any_work(tiny_model_dir, tmp_path):
    """Under a scenario the job estimates its need from config.json and, over the budget, does no work: its run is
    FINISHED with the reason as the tag `skipped`, and the decision lists it rejected with that reason."""
    from helpers import compose, mlflow_runs, run_job
    from runner.report.data import rows_of
    from runner.report.recommend import Constraints, recommend
    from runner.tracking import SKIPPED_TAG

    cache = tmp_path / "cache"
    args = ["model=hf", f"model.id={tiny_model_dir}", "format=gguf_q8_0", "deployment=cpu_chat_4users"]
    out = run_job([*args, "deployment.memory_budget_bytes=1000000"], tmp_path, cache)
    assert out.returncode == 0, out.line
    client, runs = mlflow_runs(out.db)
    (run,) = runs
    reason = run.data.tags[SKIPPED_TAG]
    assert run.info.status == "FINISHED" and reason.startswith("does not fit: needs ")
    assert "more than the memory budget 0.0 GiB" in reason
    assert run.data.params["fit.verdict"] == "does not fit" and not run.data.metrics
    assert not (cache / "artifacts").exists()  # nothing was quantized
    d = compose(["deployment=cpu_chat_4users", "deployment.memory_budget_bytes=1000000"]).deployment
    result = recommend(rows_of([run], f"sqlite:///{out.db}"), Constraints.of_scenario(d), d.prefer)
    assert result["rejected"] == {"gguf_q8_0": [f"skipped before any work, {reason}"]}
