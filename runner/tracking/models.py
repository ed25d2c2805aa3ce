"""A job's quantized artifact as an MLflow 3 LoggedModel, so the UI lists the artifacts side by side.

The model is "external" in MLflow's sense (what `mlflow.create_external_model` makes: an MLmodel
stub, no flavor): its files stay in the runner's cache, or, with `tracking.upload_artifacts=true`,
are uploaded into the run's artifact store (under `artifact/`) so a team on a remote tracking
server can download them. Done through the Tracker's own client rather than mlflow's fluent API,
which reads the process-wide tracking URI.
"""

import hashlib
import re
import tempfile
from pathlib import Path
from typing import Any, Dict

UPLOAD_FOLDER = "artifact"  # the run's artifact folder that holds the uploaded files
ARTIFACT_KEY_TAG = "artifact.key"  # the cache key of the job's artifact
UPLOADED_TAG = "artifact.uploaded"  # "true" once its files are in the run's artifact store (cache.remote=mlflow)


def log_artifact_model(tracker, artifact, format_cfg, model) -> str:
    """Create the run's LoggedModel (READY, an output of the run) and link the run's later metrics to it."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.models.utils import get_external_mlflow_model_spec
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_IS_EXTERNAL

    uri = tracker.log_folder(artifact.path, UPLOAD_FOLDER) if tracker.upload_artifacts else artifact.path.as_uri()
    if tracker.upload_artifacts:  # complete: another machine's cache may now download it
        tracker.set_tags({UPLOADED_TAG: "true"})
    client = tracker.client
    logged = client.create_logged_model(
        tracker.experiment_id,
        name=model_name(format_cfg),
        source_run_id=tracker.run_id,
        model_type="quantized-llm",
        params=model_params(artifact.manifest, format_cfg, uri, model),
        tags={MLFLOW_MODEL_IS_EXTERNAL: "true", "qrun.base_model": model.name},
    )
    try:  # the MLmodel stub mlflow.create_external_model writes (it lets the model be registered)
        with tempfile.TemporaryDirectory(prefix="qrun-mlmodel-") as d:
            get_external_mlflow_model_spec(logged).save(str(Path(d) / MLMODEL_FILE_NAME))
            client.log_model_artifacts(logged.model_id, d)
    except BaseException:  # never left PENDING (MLflow's own log_model does the same)
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    client.log_outputs(tracker.run_id, [LoggedModelOutput(model_id=logged.model_id, step=0)])
    tracker.model_id = logged.model_id
    return logged.model_id


def model_name(format_cfg) -> str:
    """The format's name, without the characters MLflow refuses in model names (/ : . % " ')."""
    return re.sub(r"[/:.%\"']", "_", str(format_cfg.name))


def model_params(manifest: Dict[str, Any], format_cfg, uri: str, model) -> Dict[str, str]:
    return {
        "uri": uri,
        "sha256": artifact_sha256(manifest),
        "bytes": str(sum(f["bytes"] for f in manifest["files"].values())),
        "weight_bytes": str(manifest["weight_bytes"]),
        "format": str(format_cfg.name),
        "family": str(manifest.get("family", format_cfg.family)),
        "backend": backend_name(manifest, format_cfg),
        "engine": str(getattr(format_cfg, "engine", "")),
        "base_model": str(model.name),
        "files": ",".join(sorted(manifest["files"])),
    }


def artifact_sha256(manifest: Dict[str, Any]) -> str:
    """The weight file's sha256; for several files, the sha256 of their `sha256sum` lines in name order.

    So `sha256sum <weight files> | sha256sum` in the artifact folder reproduces it.
    """
    files = manifest["files"]
    names = sorted(manifest["weight_files"])
    if len(names) == 1:
        return files[names[0]]["sha256"]
    lines = "".join(f"{files[n]['sha256']}  {n}\n" for n in names)
    return hashlib.sha256(lines.encode()).hexdigest()


def backend_name(manifest: Dict[str, Any], format_cfg) -> str:
    """The library that wrote the files: format.backend where the format has a choice, else its libraries."""
    backend = getattr(format_cfg, "backend", None)
    return str(backend) if backend else "+".join(manifest.get("library_versions", {})) or str(format_cfg.family)
