"""One `mlflow server` holds a team's sweeps: 16 jobs logging to it at once lose no run, param or metric."""

import multiprocessing

import pytest

pytestmark = pytest.mark.server

JOBS = 16
PARAMS = 120  # more than one log_batch of the Tracker's (100 per call)


def _job(uri: str, i: int) -> None:
    from omegaconf import OmegaConf

    from runner.metrics import PERF_DECODE_TOK_S, QUALITY_KLD_MEAN, QUALITY_PPL
    from runner.tracking import Tracker

    tracker = Tracker(OmegaConf.create({"uri": uri, "experiment": "team", "upload_artifacts": False}))
    tracker.start(run_name=f"job-{i}", tags={"job": str(i)})
    tracker.log_params({f"p{k:03d}": f"{i}-{k}" for k in range(PARAMS)})
    tracker.log_metrics({QUALITY_PPL: 10.0 + i, QUALITY_KLD_MEAN: i / 100, PERF_DECODE_TOK_S: 100.0 * i})
    tracker.end("FINISHED")


def test_sixteen_concurrent_jobs_lose_nothing(mlflow_server):
    from mlflow.tracking import MlflowClient

    from runner.metrics import PERF_DECODE_TOK_S, QUALITY_PPL

    ctx = multiprocessing.get_context("spawn")  # each job a fresh process, as on separate nodes
    jobs = [ctx.Process(target=_job, args=(mlflow_server, i)) for i in range(JOBS)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(300)
        assert j.exitcode == 0
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("team").experiment_id], max_results=100)
    assert sorted(int(r.data.tags["job"]) for r in runs) == list(range(JOBS))
    for r in runs:
        i = int(r.data.tags["job"])
        assert r.info.status == "FINISHED"
        assert r.data.params == {f"p{k:03d}": f"{i}-{k}" for k in range(PARAMS)}
        assert (r.data.metrics[QUALITY_PPL], r.data.metrics[PERF_DECODE_TOK_S]) == (10.0 + i, 100.0 * i)
