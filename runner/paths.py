"""The project's own folders, absolute: the `qrun` script runs from anywhere.

The configs live in conf/ at the top of the repository (a checkout, an editable install); a wheel
(`pip install .`) ships the same files inside the package as runner/conf (setup.py).
"""

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
CONF_DIR = PROJECT_DIR / "conf" if (PROJECT_DIR / "conf" / "config.yaml").is_file() else PACKAGE_DIR / "conf"


def options(group: str) -> list:
    """The options of a config group: the YAML files in conf/<group>/, by name."""
    return sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml"))


# a run's per-window quality sums, relative to its MLflow artifact root: written by the evaluate stage, read by
# the report to compare two formats on the same windows (runner/stats/bootstrap.py)
WINDOW_SUMS_ARTIFACT = "quality/window_sums.json"
