"""Content-addressed cache of stage outputs.

An entry is a folder <root>/<kind>/<key>/ holding its files and `.entry.json` (the sha256 and
size of every file). It is built in a temp folder beside it and renamed into place only when
complete, so a crash, an error or a SIGKILL never leaves anything that looks complete. On every
hit the files are checked against `.entry.json` (sizes always; hashes memoized per path, size and
mtime); a corrupt entry is deleted and recomputed.

Keys hash what changes an output (model weights, the stage's settings, library versions), never
a date. On storage shared by several machines (NFS, Lustre) point cache.dir there: renames are
atomic within one filesystem, and two jobs racing on one key keep whichever finished first.
"""
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from runner.errors import UserError
from runner.hashing import sha256_file, sha256_json

log = logging.getLogger(__name__)
MODES = ("readwrite", "read", "off")
ENTRY = ".entry.json"


class Cache:
    def __init__(self, root: str | Path, mode: str = "readwrite", scratch: Optional[Path] = None):
        if mode not in MODES:
            raise UserError("cache.mode", f"unknown mode '{mode}'", f"use one of {', '.join(MODES)}")
        self.root = Path(root).expanduser().resolve()
        self.mode = mode
        # with mode=off or read, new entries live in a scratch folder (the job's run dir) instead
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="qrun-scratch-")).resolve()
        if mode == "readwrite":
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-")
                probe.close()
            except OSError as e:
                raise UserError("cache.dir", f"'{self.root}' is not writable ({e.strerror})",
                                "point cache.dir (or QRUN_CACHE_DIR) to a writable folder, or set cache.mode=read") from e

    @staticmethod
    def key(*parts) -> str:
        return sha256_json(parts)[:32]

    @property
    def memo_dir(self) -> Path:
        return self.root if self.mode == "readwrite" else self.scratch

    def get(self, kind: str, key: str) -> Optional[Path]:
        bases = (self.scratch,) if self.mode == "off" else (self.root, self.scratch)
        for base in bases:
            path = base / kind / key
            if path.is_dir():
                problem = self._problem(path)
                if problem is None:
                    return path
                log.warning("cache entry %s/%s is corrupt (%s): recomputing it", kind, key, problem)
                if base == self.scratch or self.mode == "readwrite":
                    _remove(path)
        return None

    def _problem(self, path: Path) -> Optional[str]:
        try:
            entry = json.loads((path / ENTRY).read_text())
        except (OSError, ValueError):
            return f"no readable {ENTRY}"
        for rel, facts in entry["files"].items():
            f = path / rel
            if not f.is_file():
                return f"{rel} is missing"
            if f.stat().st_size != facts["bytes"]:
                return f"{rel} has {f.stat().st_size} bytes, expected {facts['bytes']}"
            if sha256_file(f, self.memo_dir) != facts["sha256"]:
                return f"{rel} does not match its sha256"
        return None

    @contextlib.contextmanager
    def put(self, kind: str, key: str, label: str = "") -> Iterator[Path]:
        """Yield an empty temp folder; on success it becomes the entry, on error it is deleted."""
        base = self.root if self.mode == "readwrite" else self.scratch
        final = base / kind / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:8]}-", dir=final.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; entries may sit on storage shared by several users
        try:
            yield tmp
            files = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p, self.memo_dir)}
                     for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / ENTRY).write_text(json.dumps({"kind": kind, "key": key, "label": label, "created": time.time(),
                                                 "files": files}, indent=1))
            if final.exists():
                if self._problem(final) is None:  # another job finished the same entry first: keep theirs
                    shutil.rmtree(tmp)
                    return
                _remove(final)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _remove(path: Path) -> None:
    """Move aside first (atomic), then delete, so readers never see a half-deleted entry."""
    trash = path.with_name(f".tmp-trash-{path.name}-{os.getpid()}")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def entries(root: Path):
    """(kind, key, path, entry facts) for every complete entry under root."""
    for entry_file in sorted(Path(root).glob(f"*/*/{ENTRY}")):
        try:
            facts = json.loads(entry_file.read_text())
        except (OSError, ValueError):
            continue
        yield entry_file.parent.parent.name, entry_file.parent.name, entry_file.parent, facts


def stale_temps(root: Path, older_than_s: float):
    """Temp folders left by killed jobs (never complete, never read)."""
    now = time.time()
    for p in Path(root).glob("*/.tmp-*"):
        if p.is_dir() and now - p.stat().st_mtime > older_than_s:
            yield p
