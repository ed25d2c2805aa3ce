"""Reading runs back from MLflow for the report and the summary: which runs, and one flat row per run."""

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote, urlparse

from runner.errors import UserError
from runner.metrics import PARAM_BASELINE_FORMAT
from runner.paths import WINDOW_SUMS_ARTIFACT
from runner.stats.bootstrap import WindowSums
from runner.tracking import JOB_KEY_TAG, SWEEP_TAG, resolve_uri

log = logging.getLogger(__name__)
_UNREAD = object()


@dataclass
class Row:
    run_id: str
    status: str
    params: Dict[str, str]
    metrics: Dict[str, float]
    tags: Dict[str, str] = field(default_factory=dict)
    artifact_uri: Optional[str] = None
    tracking_uri: Optional[str] = None
    _window_sums: Any = field(default=_UNREAD, repr=False, compare=False)

    @property
    def format(self) -> str:
        return self.params.get("format.name", "?")

    @property
    def label(self) -> str:
        backend = self.params.get("format.backend")
        engine = self.params.get("format.engine", "?")
        return (
            f"{self.format}"
            + (f" [{backend}]" if backend else "")
            + (f" @{engine}" if engine not in ("torch", "llama_cpp") else "")
        )

    def get(self, name: str) -> Optional[float]:
        return self.metrics.get(name)

    @property
    def window_sums(self) -> Optional[WindowSums]:
        """The run's per-window quality sums (the evaluate stage's artifact), read once; None where the run has
        none (no evaluate, or a run from before the artifact existed) or it cannot be read."""
        if self._window_sums is _UNREAD:
            self._window_sums = _read_window_sums(self)
        return self._window_sums


def _read_window_sums(row: Row) -> Optional[WindowSums]:
    try:
        uri = urlparse(row.artifact_uri or "")
        if uri.scheme == "file":  # a local store: read in place
            path = Path(unquote(uri.path)) / WINDOW_SUMS_ARTIFACT
            return WindowSums.from_json(path.read_text()) if path.is_file() else None
        if row.artifact_uri is None or row.tracking_uri is None:
            return None
        import mlflow.artifacts

        local = mlflow.artifacts.download_artifacts(
            run_id=row.run_id, artifact_path=WINDOW_SUMS_ARTIFACT, tracking_uri=row.tracking_uri
        )
        return WindowSums.from_json(Path(local).read_text())
    except Exception as e:  # an unreadable artifact leaves the comparison to the logged intervals
        log.warning("run %s: window sums not read (%s: %s)", row.run_id, type(e).__name__, e)
        return None


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolve_uri(uri))


def load_rows(uri: str, experiment: str, sweep: Optional[str] = "latest") -> tuple[List[Row], Optional[str]]:
    """Rows of one sweep (its parent run id, or 'latest'), or of every finished job (sweep=None)."""
    client = _client(uri)
    exp = _store_call(
        lambda: client.get_experiment_by_name(experiment),
        "--tracking-uri",
        f"cannot read MLflow store '{uri}'",
        "pass a reachable store",
    )
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise UserError("--experiment", f"no experiment '{experiment}' in {uri}", f"use one of {names}")
    ids = [exp.experiment_id]
    if sweep is None:
        runs = client.search_runs(
            ids,
            filter_string="attributes.status = 'FINISHED'",
            max_results=10000,
            order_by=["attributes.start_time DESC"],
        )
        latest: Dict[str, Any] = {}
        for r in runs:  # the newest finished run of each job
            if r.data.tags.get(SWEEP_TAG) != "true" and "format.name" in r.data.params:
                latest.setdefault(r.data.tags.get(JOB_KEY_TAG, r.info.run_id), r)
        return [_row(r, uri) for r in latest.values()], None
    if sweep == "latest":
        parents = client.search_runs(
            ids, filter_string=f"tags.`{SWEEP_TAG}` = 'true'", max_results=1, order_by=["attributes.start_time DESC"]
        )
        if not parents:
            raise UserError(
                "--sweep", f"experiment '{experiment}' has no sweep (qrun -m ...) yet", "run a sweep, or pass --all"
            )
        parent = parents[0]
    else:
        parent = _store_call(
            lambda: client.get_run(sweep),
            "--sweep",
            f"no run '{sweep}' in {uri}",
            "pass a sweep's parent run id, 'latest', or --all",
        )
    children = client.search_runs(
        ids, filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=10000
    )
    reused = [r for r in parent.data.params.get("sweep.reused_runs", "").split(",") if r]
    runs = list(children) + [client.get_run(r) for r in reused if r not in {c.info.run_id for c in children}]
    return [_row(r, uri) for r in sorted(runs, key=lambda r: r.info.start_time)], parent.info.run_id


def _store_call(call: Callable[[], Any], key: str, problem: str, fix: str) -> Any:
    """call() against the MLflow store; any failure there is the one-line UserError naming the flag to fix."""
    try:
        return call()
    except Exception as e:
        raise UserError(key, f"{problem} ({type(e).__name__})", fix) from e


def _row(run, tracking_uri: Optional[str] = None) -> Row:
    return Row(
        run.info.run_id,
        run.info.status,
        dict(run.data.params),
        dict(run.data.metrics),
        dict(run.data.tags),
        getattr(run.info, "artifact_uri", None),
        resolve_uri(tracking_uri) if tracking_uri else None,
    )


def rows_of(runs, tracking_uri: Optional[str] = None) -> List[Row]:
    """MLflow Run objects (as the sweep callback holds them) as Rows."""
    return [_row(r, tracking_uri) for r in runs]


def baseline_name(params: dict) -> Optional[str]:
    """The preset eval.baseline resolved to (eval.baseline=auto: the model's own dtype on CUDA, fp32 on the CPU);
    None for a run that logged no baseline."""
    return params.get(PARAM_BASELINE_FORMAT) or params.get("eval.baseline") or None
