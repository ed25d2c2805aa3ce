"""cache.remote=mlflow: a machine with an empty cache downloads the artifact another machine quantized and uploaded
to the team's MLflow server, verifies it against its manifest and quantizes nothing; a damaged upload is rebuilt."""

import json

import pytest

from helpers import TINY_ARGS, fresh_cache, run_job

pytestmark = pytest.mark.server


def test_a_second_cache_downloads_the_uploaded_artifact_instead_of_quantizing(tmp_path, tiny_model_dir, mlflow_server):
    from mlflow.tracking import MlflowClient

    job = ["format=gguf_q4_k_m", "stages=[quantize]", "model=hf", f"model.id={tiny_model_dir}", *TINY_ARGS]
    team = ["tracking=server", f"tracking.uri={mlflow_server}", "tracking.upload_artifacts=true"]
    first = run_job([*job, *team], tmp_path / "a", fresh_cache(tmp_path / "cache_a"))
    assert first.returncode == 0, first.line
    again = [*job, *team, "cache.remote=mlflow", "resume=false"]  # resume=false: the server knows the job finished
    second = run_job(again, tmp_path / "b", fresh_cache(tmp_path / "cache_b"))
    assert second.returncode == 0, second.line

    client = MlflowClient(tracking_uri=mlflow_server)
    made, fetched = (client.get_run(o.result["run_id"]).data.tags for o in (first, second))
    assert made["cache.artifact"] == "miss" and made["artifact.uploaded"] == "true"
    assert fetched["cache.artifact"] == "remote" and fetched["artifact.downloaded_from"] == first.result["run_id"]
    [entry_a] = (tmp_path / "cache_a" / "artifacts").glob("*/manifest.json")
    [entry_b] = (tmp_path / "cache_b" / "artifacts").glob("*/manifest.json")
    assert json.loads(entry_b.read_text()) == json.loads(entry_a.read_text())  # the same files, sha256 for sha256
    assert not list((tmp_path / "cache_b").glob("gguf_base/*"))  # no f16 conversion: nothing was quantized here

    for f in (tmp_path / "server-artifacts").rglob("*.gguf"):  # the upload damaged after the fact
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0xFF
        f.write_bytes(bytes(data))
    third = run_job(again, tmp_path / "c", fresh_cache(tmp_path / "cache_c"))
    assert third.returncode == 0, third.line
    rebuilt = client.get_run(third.result["run_id"]).data.tags
    assert rebuilt["cache.artifact"] == "miss"  # refused by its manifest, quantized here instead
    assert list((tmp_path / "cache_c").glob("gguf_base/*"))
