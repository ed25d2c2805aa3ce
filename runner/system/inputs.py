"""The files this process read to decide what its jobs are (the model's files, the eval and calibration
texts), with their states: a finished sweep's stamp (runner/sweep_stamp.py) keeps them, so a re-run notices
when one changed.

A hub model id names whatever was last pushed, which only the hub can say: a process that used one is marked
unverifiable, and its sweep is never stamped.
"""

import os
from pathlib import Path
from typing import Dict, List, Optional

READ: Dict[str, List[int]] = {}  # resolved path -> [size, mtime_ns, ctime_ns] when it was read
UNVERIFIABLE: List[str] = []  # what this process used that no file state can vouch for


def record(path: Path) -> None:
    try:
        resolved = Path(path).resolve()
        READ[str(resolved)] = state(resolved)
    except OSError:
        pass


def unverifiable(what: str) -> None:
    UNVERIFIABLE.append(what)


def state(path: Path) -> List[int]:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def first_change(recorded: Dict[str, List[int]]) -> Optional[str]:
    """The first recorded file whose state differs now (or that is gone), else None."""
    for path, was in recorded.items():
        try:
            if state(Path(path)) != was:
                return path
        except OSError:
            return path
    return None
