"""MLflow: one run per job, a parent run per sweep, params/metrics/tags/artifacts."""

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Optional

from runner.errors import UserError
from runner.metrics import SERVING, check_declared, in_table
from runner.system.environment import network_filesystem
from runner.system.lifecycle import HEARTBEAT_TAG, Heartbeat, orphan_reason, owner_tags
from runner.system.packages import version

log = logging.getLogger(__name__)
PARENT_FILE = "mlflow_parent.json"
RUN_FILE = "run.json"
JOB_KEY_TAG = "qrun.job_key"
SWEEP_TAG = "qrun.sweep"
SKIPPED_TAG = "skipped"  # a job that did no work: why (the pre-flight fit check, runner/benchmark/fit.py)
# what served a serving benchmark (runner/benchmark/serving.py server_tags), read by the decision
SERVER_TAG = "serving.server"
SERVER_VERSION_TAG = "serving.server_version"
SERVER_SETTING_TAG = "serving.server.{}"  # one per deciding flag: slots, max-num-seqs, KV cache size, dtype
SERVER_COMMAND_TAG = "serving.server_command"  # the shell line that was measured
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value (older stores); a longer command stays in the artifact only
# The experiment is a model-development one (the UI's ExperimentKind enum in mlflow/server/js; mlflow
# 3.17 has no Python constant for it). MLflow 3.17's UI itself picks GenAI vs runs pages from its
# own "workflowType" (a URL parameter, else the browser's last choice, else GenAI): ui_url() sets it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
# A saved runs-table view (what the UI's "Share" button writes: an experiment tag, opened by
# ?viewStateShareKey=): the key metric columns preselected, best quality first.
RUNS_VIEW_KEY = "qrun"
RUNS_VIEW_TAG = "mlflow.sharedViewState." + RUNS_VIEW_KEY


def resolve_uri(uri: str) -> str:
    """Make a relative sqlite/file store absolute (against the launch directory)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
    if uri.startswith("file:") and not uri.startswith("file://"):  # file:relative or file:/absolute, no authority
        return Path(uri[len("file:") :]).resolve().as_uri()
    if "://" not in uri:
        return "sqlite:///" + str(Path(uri).resolve()) if uri.endswith(".db") else Path(uri).resolve().as_uri()
    return uri


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a SQLite store's URI (relative to the launch directory unless absolute), else None."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> Optional[str]:
    """Artifacts of a local SQLite store go in mlartifacts/ beside the .db file; a server decides its own."""
    db = sqlite_path(uri)
    return (db.parent / "mlartifacts").as_uri() if db else None


_WARNED: set = set()


def _warn_if_sqlite_on_network_storage(uri: str) -> None:
    """SQLite's locking is unreliable on network file systems: jobs on several nodes can corrupt the store."""
    db = sqlite_path(uri)
    if db is None or uri in _WARNED:
        return
    kind = network_filesystem(db.parent)
    if kind:
        _WARNED.add(uri)
        log.warning(
            "tracking.uri: the SQLite store %s is on a network file system (%s), where SQLite's locking is unreliable "
            "-- fix: run `mlflow server` on one machine and use tracking=server tracking.uri=http://<host>:5000",
            db,
            kind,
        )


class Tracker:
    def __init__(self, cfg):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_uri(cfg.uri)
        _warn_if_sqlite_on_network_storage(self.uri)
        try:  # MLflow opens (and creates) a SQLite store here already
            self.client = MlflowClient(tracking_uri=self.uri)
        except Exception as e:
            if "MLFLOW_ALLOW_FILE_STORE" in str(e):
                raise UserError(
                    "tracking.uri",
                    f"MLflow {version('mlflow')} refuses to write a file store ('{self.uri}')",
                    "use a database store, e.g. tracking.uri=sqlite:///mlruns.db, or set "
                    "MLFLOW_ALLOW_FILE_STORE=true to keep the file store",
                ) from e
            raise UserError(
                "tracking.uri",
                f"cannot open MLflow store '{self.uri}' ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                "pass a tracking.uri whose folder exists and is writable (e.g. sqlite:///mlflow.db)",
            ) from e
        self.experiment_name = cfg.experiment
        self.upload_artifacts = bool(getattr(cfg, "upload_artifacts", False))
        self.experiment_id = self._experiment_id()
        self.run_id: Optional[str] = None
        self.model_id: Optional[str] = None  # the run's LoggedModel: metrics logged from then on are linked to it

    def _experiment_id(self) -> str:
        if self.uri.startswith(("http://", "https://")):
            _check_reachable(self.uri)
        try:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is not None:
                self._tag_experiment(exp)
                return exp.experiment_id
            return self.client.create_experiment(
                self.experiment_name, artifact_location=artifact_root(self.uri), tags=experiment_tags()
            )
        except Exception as e:
            if "already exists" in str(e):  # a parallel job created it first (with the tag)
                return self.client.get_experiment_by_name(self.experiment_name).experiment_id
            raise UserError(
                "tracking.uri",
                f"cannot use MLflow store '{self.uri}' ({type(e).__name__}: {str(e).splitlines()[0][:160]})",
                "pass a reachable tracking.uri (e.g. sqlite:///mlflow.db or http://127.0.0.1:5000)",
            ) from e

    def _tag_experiment(self, exp) -> None:
        """An experiment made by an older runner (or by hand) gets the kind and the runs view; a kind someone set
        stays."""
        for key, value in experiment_tags().items():
            if key not in exp.tags or (key == RUNS_VIEW_TAG and exp.tags[key] != value):
                self.client.set_experiment_tag(exp.experiment_id, key, value)

    def ui_url(self, base: str = "http://127.0.0.1:5000") -> str:
        return ui_url(base, self.experiment_id)

    def start(self, run_name: str, parent_run_id: Optional[str] = None, tags: Optional[Dict[str, str]] = None) -> str:
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        return self.run_id

    @staticmethod
    def job_tags(job_key: str) -> Dict[str, str]:
        return {JOB_KEY_TAG: job_key, **owner_tags()}

    def find_run(self, job_key: str, status: str):
        runs = self.client.search_runs(
            [self.experiment_id],
            max_results=1,
            order_by=["attributes.start_time DESC"],
            filter_string=f"tags.`{JOB_KEY_TAG}` = '{job_key}' and attributes.status = '{status}'",
        )
        return runs[0] if runs else None

    def close_stale_runs(self, job_key: str) -> None:
        """Runs of this job left RUNNING by a dead process (this host: its pid; elsewhere: its heartbeat) become
        KILLED."""
        self._close_orphans(f"tags.`{JOB_KEY_TAG}` = '{job_key}' and attributes.status = 'RUNNING'")

    def close_stale_sweeps(self) -> None:
        """Parent runs of killed sweeps (and their children left RUNNING) become KILLED."""
        for parent in self._close_orphans(f"tags.`{SWEEP_TAG}` = 'true' and attributes.status = 'RUNNING'"):
            self._close_orphans(f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'")

    def _close_orphans(self, filter_string: str) -> list:
        closed = []
        for r in self.client.search_runs([self.experiment_id], filter_string=filter_string, max_results=1000):
            why = orphan_reason(r.data.tags)
            if why:
                self.client.set_tag(r.info.run_id, "error", why)
                self.client.set_terminated(r.info.run_id, status="KILLED")
                closed.append(r.info.run_id)
        return closed

    def heartbeat(self, *run_ids: str) -> Heartbeat:
        """A started daemon thread that refreshes the heartbeat tag of run_ids until stopped."""

        def beat():
            for run_id in run_ids:
                self.client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.0f}")

        return Heartbeat(beat).start()

    def log_params(self, params: Dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Dict[str, float]) -> None:
        """Log declared metrics only: an undeclared name is a programming error (ValueError), not a UserError."""
        from mlflow.entities import Metric

        check_declared(metrics)
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, 0, model_id=self.model_id) for k, v in sorted(metrics.items()) if v is not None
        ]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, metrics=items[i : i + 100])

    def set_tags(self, tags: Dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_file(self, path: Path, subdir: Optional[str] = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=subdir)

    def log_folder(self, path: Path, subdir: str) -> str:
        """Upload a folder into the run's artifact store; returns its runs:/ URI."""
        self.client.log_artifacts(self.run_id, str(path), artifact_path=subdir)
        return f"runs:/{self.run_id}/{subdir}"

    def log_json(self, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(obj, indent=2, default=str))
            self.log_file(p)

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(text)
            self.log_file(p)

    def end(self, status: str) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    def end_quietly(self, status: str) -> None:
        """end() where a failure must not hide the error being handled: the store may be what failed."""
        try:
            self.end(status)
        except Exception as e:
            log.error("could not mark MLflow run %s %s (%s: %s)", self.run_id, status, type(e).__name__, e)


def experiment_tags() -> Dict[str, str]:
    return {EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT, RUNS_VIEW_TAG: runs_view_state()}


def runs_view_state() -> str:
    """The runs table's columns: the Models column and the sweep summary's offline metrics (runner/metrics.py)."""
    columns = ["attributes.`Models`"] + [f"metrics.`{m.name}`" for m in in_table("summary") if m.producer != SERVING]
    return json.dumps({"selectedColumns": columns, "orderByKey": "metrics.`quality/ppl_delta_pct`", "orderByAsc": True})


def ui_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table with the runner's columns, whatever the browser chose last time."""
    view = f"workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}"
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{view}"


def child_run_name(format_cfg) -> str:
    """'gguf_q4_k_m · llama_cpp': a job's run is named after its format and the engine that ran it."""
    engine = getattr(format_cfg, "engine", None)
    return f"{format_cfg.name} · {engine}" if engine else str(format_cfg.name)


def _check_reachable(uri: str) -> None:
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5).read()
    except Exception as e:
        raise UserError(
            "tracking.uri",
            f"MLflow server '{uri}' is not reachable ({e})",
            "start it (mlflow server --host 127.0.0.1) or pick another tracking.uri",
        ) from e


def flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
