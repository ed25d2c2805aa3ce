"""Content-addressed cache of stage outputs.

An entry is a folder <root>/<kind>/<key>/ holding its files and `.entry.json` (the sha256 and
size of every file). It is built in a temp folder beside it and renamed into place only when
complete, so a crash, an error or a SIGKILL never leaves anything that looks complete. On every
hit the files are checked against `.entry.json` (sizes always; hashes memoized per path, size and
mtime); a corrupt entry is deleted and recomputed.

Every temp folder (`<root>/<kind>/.tmp-*`: an entry being built, or one being deleted) holds
`.owner.json` (host, pid, process start time) beside the folder the caller writes to. A temp whose
owner died on this host is removed by the next Cache() on its own, and by `qrun-cache prune`;
a live owner's temp is never touched, however old.

Keys hash what changes an output (model weights, the stage's settings, library versions), never
a date. On storage shared by several machines (NFS, Lustre) point cache.dir there: an entry is
built under its build lock (runner.cache.lock), so workers that need the same entry at once build it
once and the others wait and use it; renames are atomic within one filesystem, so even writers that
bypass the lock keep whichever entry finished first.
"""

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from runner.cache.lock import build_lock, is_lock, remove_if_dead
from runner.errors import UserError
from runner.system.hashing import MEMO_FOLDER, forget, remember, sha256_file, sha256_json
from runner.system.lifecycle import owner, owner_alive

log = logging.getLogger(__name__)
MODES = ("readwrite", "read", "off")
ENTRY = ".entry.json"
OWNER = ".owner.json"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".tmp-trash-"
OWNERLESS_AFTER_S = 3600.0  # temps written before owners existed (or by hand): judged by age


class Cache:
    def __init__(self, root: str | Path, mode: str = "readwrite", scratch: Optional[Path] = None):
        if mode not in MODES:
            raise UserError("cache.mode", f"unknown mode '{mode}'", f"use one of {', '.join(MODES)}")
        self.root = Path(root).expanduser().resolve()
        self.mode = mode
        # where an artifact missing here may be downloaded from (cache.remote): fetch(key, folder) -> source or None
        self.remote_artifacts: Optional[Callable[[str, Path], Optional[str]]] = None
        # with mode=off or read, new entries live in a scratch folder (the job's run dir) instead
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="qrun-scratch-")).resolve()
        if mode == "readwrite":
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-")
                probe.close()
            except OSError as e:
                raise UserError(
                    "cache.dir",
                    f"'{self.root}' is not writable ({e.strerror})",
                    "point cache.dir (or QRUN_CACHE_DIR) to a writable folder, or set cache.mode=read",
                ) from e
            remove_dead_temps(self.root)
            (self.root / "file_hashes.json").unlink(missing_ok=True)  # the memo's single-file form, now a folder

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

    def get_or_build(self, kind: str, key: str, build: Callable[[Path], None], label: str = "") -> Path:
        """The entry kind/key; on a miss `build(folder)` writes its files, under the entry's build lock:
        a worker that finds another one building the same entry waits for it and uses its entry."""
        hit = self.get(kind, key)
        if hit:
            return hit
        base = self.root if self.mode == "readwrite" else self.scratch
        (base / kind).mkdir(parents=True, exist_ok=True)
        what = f"{kind}/{key[:12]}" + (f" ({label})" if label else "")
        with build_lock(base / kind, key, what):
            hit = self.get(kind, key)  # built by the worker we waited for
            if hit:
                return hit
            start = time.perf_counter()
            with self.put(kind, key, label) as tmp:
                build(tmp)
            log.info("built %s in %.1f s", what, time.perf_counter() - start)
        built = self.get(kind, key)
        assert built is not None, f"{kind}/{key} vanished right after it was built"
        return built

    @contextlib.contextmanager
    def put(self, kind: str, key: str, label: str = "") -> Iterator[Path]:
        """Yield an empty temp folder; on success it becomes the entry, on error it is deleted."""
        base = self.root if self.mode == "readwrite" else self.scratch
        final = base / kind / key
        final.parent.mkdir(parents=True, exist_ok=True)
        shell = _new_temp(final.parent, f"{TEMP_PREFIX}{key[:8]}-")
        tmp = shell / "entry"
        tmp.mkdir(mode=0o755)
        try:
            yield tmp
            # hashed here once (in-process memo), remembered on disk under the entry's own paths after the rename
            files = {
                str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            (tmp / ENTRY).write_text(
                json.dumps({"kind": kind, "key": key, "label": label, "created": time.time(), "files": files}, indent=1)
            )
            if final.exists():
                if self._problem(final) is None:  # another job finished the same entry first: keep theirs
                    return
                _remove(final)
            try:
                os.rename(tmp, final)
            except OSError as e:  # it finished between our check and our rename: use theirs if it is sound
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or self._problem(final) is not None:
                    raise
                log.info("another process finished %s/%s first: using its entry", kind, key)
                return
            for rel, facts in files.items():
                remember(final / rel, facts["sha256"], self.memo_dir)
        finally:
            shutil.rmtree(shell, ignore_errors=True)


def _new_temp(parent: Path, prefix: str) -> Path:
    """A temp folder in parent holding its owner; the work goes in a subfolder."""
    shell = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(shell, 0o755)  # mkdtemp makes it 0700; entries may sit on storage shared by several users
    (shell / OWNER).write_text(json.dumps(owner()))
    return shell


def _remove(path: Path) -> None:
    """Move aside first (atomic), then delete, so readers never see a half-deleted entry."""
    forget(path, path.parent.parent)  # entries sit at <cache root>/<kind>/<key>: the root holds their memo
    shell = _new_temp(path.parent, TRASH_PREFIX)
    try:
        os.rename(path, shell / "entry")
    except OSError:
        pass
    shutil.rmtree(shell, ignore_errors=True)


def entries(root: Path):
    """(kind, key, path, entry facts) for every complete entry under root."""
    for entry_file in sorted(Path(root).glob(f"*/*/{ENTRY}")):
        try:
            facts = json.loads(entry_file.read_text())
        except (OSError, ValueError):
            continue
        yield entry_file.parent.parent.name, entry_file.parent.name, entry_file.parent, facts


def temp_owner_state(path: Path) -> str:
    """'alive', 'dead' (on this host), 'elsewhere' (another host: unknown) or 'none' (no owner file)."""
    try:
        info = json.loads((path / OWNER).read_text())
    except (OSError, ValueError):
        return "none"
    alive = owner_alive(info.get("host"), info.get("pid"), info.get("start"), info.get("pidns"))
    return "elsewhere" if alive is None else "alive" if alive else "dead"


def _temp_dirs(root: Path, kind: Optional[str] = None):
    """Hidden folders inside kind folders: entry keys are hex, so these are all temps (ours or older kinds)."""
    for p in sorted(Path(root).glob(f"{kind or '*'}/.*")):
        if p.is_dir():
            yield p


def remove_dead_temps(root: Path) -> None:
    """Temp folders of processes that died on this host (cheap: one glob, one small read each)."""
    for p in Path(root).glob(f"*/{TEMP_PREFIX}*"):
        if is_lock(p):
            if remove_if_dead(p):
                log.info("removed the build lock %s, left by a process that died", p)
        elif temp_owner_state(p) == "dead":
            log.info("removing %s, left by a process that died", p)
            shutil.rmtree(p, ignore_errors=True)


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            newest = max(newest, p.lstat().st_mtime)
    return newest


def stale_temps(root: Path, kind: Optional[str] = None, ownerless_after_s: float = OWNERLESS_AFTER_S):
    """(path, why) of every temp that no live process writes: its owner died on this host, or it has
    no owner and nothing in it changed for ownerless_after_s. A live owner's or another host's temp is kept."""
    now = time.time()
    for p in _temp_dirs(root, kind):
        state = temp_owner_state(p)
        if state == "dead":
            yield p, "its process died"
        elif state == "none" and now - _newest_mtime(p) > ownerless_after_s:
            yield p, f"no owner, untouched for {(now - _newest_mtime(p)) / 3600:.1f} h"
    if kind is None:  # files of the hash memo and the writability probe, cut short by a kill
        root = Path(root)
        for p in [*root.glob("*.tmp"), *root.glob(f"{MEMO_FOLDER}/*/.*.tmp"), *root.glob(".probe-*")]:
            if p.is_file() and now - p.stat().st_mtime > ownerless_after_s:
                yield p, "a leftover file"


def temps_elsewhere(root: Path, kind: Optional[str] = None):
    """Temps owned by processes on other hosts: their liveness cannot be checked from here."""
    return [p for p in _temp_dirs(root, kind) if temp_owner_state(p) == "elsewhere"]
