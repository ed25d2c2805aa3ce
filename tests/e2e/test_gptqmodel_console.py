"""gptqmodel prints its banner, INFO lines, config dumps and timing tables straight to stdout (LogBar, print):
in a job they belong in the job's log file, not on the console (runner/system/library_logs.py)."""

import pytest

pytestmark = pytest.mark.quantlib

# what gptqmodel writes on every quantize: its banner, the GIL notice, the quantize config dump, the timing
# table, the save's folder listing and config.json print(), tokenicer's pad-token note, and the verdict of its
# 100 MB disk-speed probe (skipped: it only serves offload_to_disk, which is off)
NOISE = (
    "GPT-QModel",
    "Python GIL is enabled",
    "Estimated Quantization BPW",
    "Files in directory",
    "Content of saved",
    "Pre-Quantized model size",
    "Auto fixed pad_token_id",
    "Disk subsystem",
)


def test_gptqmodel_output_goes_to_the_job_log(weight_only_sweep):
    cwd, proc, _ = weight_only_sweep  # its gptq_int4 job quantized with gptqmodel
    console = proc.stdout + proc.stderr
    leaked = [line for line in console.splitlines() if any(n in line for n in NOISE)]
    assert not leaked, f"{len(leaked)} gptqmodel lines on the console, e.g. {leaked[:3]}"
    assert "quantizing" in console  # the job's own stage line stays

    logs = list(cwd.glob("multirun/*/*/*_gptq_int4/*.log"))
    assert len(logs) == 1, logs
    text = logs[0].read_text()
    for noise in ("GPT-QModel", "Files in directory", "Pre-Quantized model size"):
        assert noise in text, noise
    assert "\x1b[" not in text  # colour codes stripped
