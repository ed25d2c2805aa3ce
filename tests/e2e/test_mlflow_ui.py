"""The MLflow UI in a real headless browser (the system's Chromium) on a store made by a tiny sweep.

`mlflow ui` is started on loopback and stopped by its pid; each page is loaded after the React app
ran, checked for the run names and the model entries, and saved as a screenshot under pytest's tmp dir
(the path is printed: `pytest -s` shows it).
"""

import re
import sys
from pathlib import Path

import pytest

from helpers import ROOT, TINY_SWEEP_FORMATS, mlflow_runs, need

pytestmark = [pytest.mark.browser, pytest.mark.server]

sys.path.insert(0, str(ROOT / "scripts"))
from ui_check import CHROMIUM, load_page, mlflow_process  # noqa: E402

RUN_NAMES = ["fp16 · torch", "gguf_q8_0 · llama_cpp"]


@pytest.fixture(scope="module")
def ui(tiny_sweep, tmp_path_factory):
    need(Path(CHROMIUM).exists(), f"{CHROMIUM} (make chromium)")
    client, runs = mlflow_runs(tiny_sweep.db)
    jobs = {r.info.run_id for r in tiny_sweep.jobs}
    models = [m for m in client.search_logged_models([runs[0].info.experiment_id]) if m.source_run_id in jobs]
    logs = tmp_path_factory.mktemp("mlflow_ui")
    with mlflow_process("ui", f"sqlite:///{tiny_sweep.db}", logs / "mlflow_ui.log") as base:
        yield base, runs[0].info.experiment_id, {m.name: m.model_id for m in models}


def test_runs_table_shows_runs_models_and_key_metrics(ui, tmp_path):
    from runner.tracking import ui_url

    base, experiment_id, models = ui
    shot = tmp_path / "mlflow_runs.png"
    html, text = load_page(ui_url(base, experiment_id), shot, RUN_NAMES + ["quality/ppl_delta_pct"])
    print(f"\nscreenshot of the runs table: {shot}")
    assert re.search(r"\bRuns\b", text) and "Token Usage" not in text  # the runs table, not the GenAI overview
    for name in RUN_NAMES:
        assert name in text, (name, text[:1500])
    assert set(models) == set(TINY_SWEEP_FORMATS)
    for model_id in models.values():  # the Models column links each run to its LoggedModel
        assert f"/models/{model_id}" in html, model_id
    for column in ("quality/ppl", "quality/ppl_delta_pct", "quality/kld_mean", "perf/decode_tok_s"):
        assert column in text, column  # preselected by the runner's saved view


def test_models_tab_lists_the_artifacts_side_by_side(ui, tmp_path):
    base, experiment_id, models = ui
    shot = tmp_path / "mlflow_models.png"
    url = f"{base}/#/experiments/{experiment_id}/models?workflowType=machine_learning"
    html, text = load_page(url, shot, RUN_NAMES)
    print(f"\nscreenshot of the models tab: {shot}")
    for name, model_id in models.items():
        assert f"/models/{model_id}" in html and name in text, name
    for name in RUN_NAMES:  # each model's source run
        assert name in text, name
    assert text.count("Ready") >= 2
