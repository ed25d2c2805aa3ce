"""runner/config/checks.py on composed configs: every numeric key that cannot work is refused, naming it.

The real `qrun` path (exit 2, FAILED run, empty cache) is covered in tests/test_bad_input.py.
"""

import pytest
from hydra import compose, initialize_config_dir

from helpers import ROOT
from runner.config.checks import MAX_KLD_TOPK
from runner.config.schema import register_configs
from runner.errors import UserError
from runner.stages import check_config
from runner.system.environment import usable_cores

CONF = ROOT / "conf"
register_configs()


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    "overrides",
    [[], ["eval=quick", "benchmark=quick"], ["benchmark=serving"], ["calibration=quick", "hardware.threads=1"]],
)
def test_shipped_settings_pass(overrides):
    check_config(_compose(overrides))


SERVING = ["benchmark=serving"]
CASES = [
    (["hardware.threads=0"], "hardware.threads"),
    ([f"hardware.threads={usable_cores() + 1}"], "hardware.threads"),
    (["hardware.n_gpu_layers=-2"], "hardware.n_gpu_layers"),
    (["hardware.n_gpus=-1"], "hardware.n_gpus"),
    (["hardware.tensor_parallel_size=0"], "hardware.tensor_parallel_size"),
    (["hardware.gpu_memory_utilization=0"], "hardware.gpu_memory_utilization"),
    (["hardware.gpu_memory_utilization=1.5"], "hardware.gpu_memory_utilization"),
    (["hardware.gpu_memory_bytes=0"], "hardware.gpu_memory_bytes"),
    (["hardware.memory_budget_bytes=-1"], "hardware.memory_budget_bytes"),
    (["calibration.n_samples=0"], "calibration.n_samples"),
    (["calibration.seq_len=0"], "calibration.seq_len"),
    (["eval.n_tokens=1"], "eval.n_tokens"),
    (["eval.ctx_len=1"], "eval.ctx_len"),
    (["eval.n_tokens=100", "eval.ctx_len=128"], "eval.ctx_len"),
    (["eval.stride=0"], "eval.stride"),
    (["eval.stride=1024"], "eval.stride"),  # > ctx_len: tokens between windows would never be scored
    (["eval.kld_topk=0"], "eval.kld_topk"),
    ([f"eval.kld_topk={MAX_KLD_TOPK + 1}"], "eval.kld_topk"),
    (["eval.windows=chunks"], "eval.windows"),
    (["eval=llama_perplexity", "eval.stride=256"], "eval.stride"),  # llama-perplexity's chunks are disjoint
    (["eval=llama_perplexity", "eval.ctx_len=3", "eval.stride=3"], "eval.ctx_len"),  # nothing left to score
    (["benchmark.kind=batch"], "benchmark.kind"),
    (["benchmark.prompt_tokens=0"], "benchmark.prompt_tokens"),
    (["eval.n_tokens=512", "benchmark.prompt_tokens=1024"], "benchmark.prompt_tokens"),
    (["benchmark.gen_tokens=1"], "benchmark.gen_tokens"),
    (["benchmark.repeats=0"], "benchmark.repeats"),
    (["benchmark.warmup=-1"], "benchmark.warmup"),
    (SERVING + ["benchmark.concurrency=0"], "benchmark.concurrency"),
    (SERVING + ["benchmark.requests=0"], "benchmark.requests"),
    (SERVING + ["benchmark.arrival=poisson", "benchmark.rate=0"], "benchmark.rate"),
    (SERVING + ["benchmark.request_timeout_s=0"], "benchmark.request_timeout_s"),
    (SERVING + ["benchmark.max_duration_s=0"], "benchmark.max_duration_s"),
    (SERVING + ["benchmark.startup_timeout_s=0"], "benchmark.startup_timeout_s"),
    (SERVING + ["benchmark.port=70000"], "benchmark.port"),
    (SERVING + ["benchmark.slo.ttft_s=0"], "benchmark.slo.ttft_s"),
]


@pytest.mark.parametrize("overrides,key", CASES, ids=[" ".join(o) for o, _ in CASES])
def test_value_that_cannot_work_names_its_key(overrides, key):
    with pytest.raises(UserError) as e:
        check_config(_compose(overrides))
    assert e.value.key == key and e.value.fix, str(e.value)


def test_threads_fix_names_this_machines_cores():
    with pytest.raises(UserError, match=f"between 1 and {usable_cores()}"):
        check_config(_compose(["hardware.threads=100000"]))


def test_stages_without_eval_or_benchmark_skip_their_checks():
    check_config(_compose(["stages=[quantize]", "eval.n_tokens=0", "benchmark.repeats=0"]))
