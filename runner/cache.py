"""Content-addressed cache of stage outputs.

An entry is a folder <root>/<kind>/<key>/. It is built in a temp folder beside it and renamed
into place only when complete, so a crash or an error never leaves a half-written entry.
"""
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from runner.errors import UserError
from runner.hashing import sha256_json

MODES = ("readwrite", "read", "off")


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

    def _base(self, write: bool) -> Path:
        return self.root if (not write or self.mode == "readwrite") else self.scratch

    def get(self, kind: str, key: str) -> Optional[Path]:
        if self.mode == "off":
            path = self.scratch / kind / key
            return path if path.is_dir() else None
        for base in (self.root, self.scratch):
            path = base / kind / key
            if path.is_dir():
                return path
        return None

    @contextlib.contextmanager
    def put(self, kind: str, key: str) -> Iterator[Path]:
        """Yield an empty temp folder; on success it becomes the entry, on error it is deleted."""
        final = self._base(write=True) / kind / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:8]}-", dir=final.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; entries may sit on storage shared by several users
        try:
            yield tmp
            if final.exists():  # another process finished the same entry first: keep theirs
                shutil.rmtree(tmp)
            else:
                os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
