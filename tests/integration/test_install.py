"""`pip install .` (not editable) gives a working qrun: the configs ship inside the package (runner/conf), the
repository keeps conf/ at the top for editing. The wheel is built from a copy of the project files (the
working tree gets no build/ folder) and installed with --target; its deps come from this venv."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

PROJECT_FILES = ("pyproject.toml", "setup.py", "README.md", "runner", "conf")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    src, target = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("site")
    for name in PROJECT_FILES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(
            ROOT / name,
            src / name,
            **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}),
        )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _run(installed: Path, args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_package_carries_the_configs(installed):
    shipped = sorted(
        p.relative_to(installed / "runner" / "conf").as_posix() for p in (installed / "runner" / "conf").rglob("*.yaml")
    )
    in_repo = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml"))
    assert shipped == in_repo


def test_qrun_cfg_job_runs_from_the_installed_package(installed, tmp_path):
    where = _run(
        installed, ["-c", "import runner, runner.paths as p; print(runner.__file__); print(p.CONF_DIR)"], tmp_path
    )
    module, conf_dir = where.stdout.split()
    assert Path(module).is_relative_to(installed) and Path(conf_dir) == installed / "runner" / "conf", where.stdout

    proc = _run(installed, ["-m", "runner", "--cfg", "job", "format=gguf_q4_k_m"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "quant_type: q4_k_m" in proc.stdout and "n_tokens: 16384" in proc.stdout

    helped = _run(installed, ["-m", "runner", "--help"], tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("qrun:"), helped.stdout[:500]


def test_qrun_report_help_from_the_installed_package(installed, tmp_path):
    proc = _run(installed, ["-m", "runner.report", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "usage: qrun-report" in proc.stdout


def test_help_introduces_qrun_and_lists_only_real_options(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("qrun:") and "powered by Hydra" not in out
    assert "make run" in out and "qrun-report" in out
    assert "schema/" not in out  # the ConfigStore's schemas are not options
    for group in ("format", "calibration", "eval", "experiment"):
        options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        assert all(o in out for o in options), group
