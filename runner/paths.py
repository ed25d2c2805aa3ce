"""The project's own folders, absolute: the installed `qrun` script runs from anywhere (editable install)."""
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_DIR / "conf"
