"""The pre-flight fit estimate on SmolLM2-135M on CPU: within 25 % of the offline benchmark's measured peak RSS."""

import pytest

from helpers import mlflow_runs, run_qrun
from runner import metrics as M

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]
FORMATS = ("fp32", "gguf_q8_0")  # the torch engine at full width, llama.cpp on an 8.5-bit file


def test_smollm2_estimates_are_within_a_quarter_of_the_measured_peak(tmp_path, cache_dir):
    args = ["-m", f"format={','.join(FORMATS)}", "stages=[quantize,benchmark]", "benchmark=quick"]
    proc = run_qrun(args, tmp_path, cache_dir, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    jobs = {r.data.params["format.name"]: r.data.metrics for r in runs if "format.name" in r.data.params}
    assert sorted(jobs) == sorted(FORMATS)
    for fmt, m in jobs.items():
        ratio = m[M.MEMORY_FIT_ESTIMATE_OVER_MEASURED]
        assert 0.75 <= ratio <= 1.25, (fmt, ratio, m[M.MEMORY_FIT_ESTIMATE_BYTES], m[M.PERF_PEAK_RSS_BYTES])
