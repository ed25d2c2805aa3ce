"""`cache.remote=mlflow`: an artifact that another machine quantized and uploaded to the MLflow artifact store
(`tracking.upload_artifacts=true`, e.g. through a team's `mlflow server`) is downloaded into this cache instead of
being quantized again. The run that uploaded it carries its cache key (ARTIFACT_KEY_TAG) and, once the upload is
complete, UPLOADED_TAG; the caller verifies the files against their manifest before the entry is kept
(runner/formats/artifacts.py).
"""

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Optional

from runner.tracking import Tracker
from runner.tracking.models import ARTIFACT_KEY_TAG, UPLOAD_FOLDER, UPLOADED_TAG

log = logging.getLogger(__name__)
ENTRY_FILE = ".entry.json"  # the uploading cache's own entry record: this cache writes its own


def mlflow_artifact_source(tracking_cfg) -> Callable[[str, Path], Optional[str]]:
    """fetch(key, folder): the uploaded files of artifact `key` into `folder`; the uploading run's id, or None."""

    def fetch(key: str, folder: Path) -> Optional[str]:
        tracker = Tracker(tracking_cfg)
        runs = tracker.client.search_runs(
            [tracker.experiment_id],
            filter_string=f"tags.`{ARTIFACT_KEY_TAG}` = '{key}' and tags.`{UPLOADED_TAG}` = 'true'",
            order_by=["attributes.start_time DESC"],
            max_results=5,
        )
        for run in runs:
            with tempfile.TemporaryDirectory(prefix=".download-", dir=folder.parent) as tmp:
                try:
                    local = Path(tracker.client.download_artifacts(run.info.run_id, UPLOAD_FOLDER, tmp))
                except Exception as e:  # a store that lost it, a server that went away: quantize instead
                    log.warning("could not download artifact %s from run %s (%s)", key, run.info.run_id, e)
                    continue
                for p in local.iterdir():
                    if p.name != ENTRY_FILE:
                        shutil.move(str(p), str(folder / p.name))
            log.info("downloaded artifact %s from MLflow run %s", key[:12], run.info.run_id)
            return run.info.run_id
        return None

    return fetch
