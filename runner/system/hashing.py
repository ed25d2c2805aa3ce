"""Content hashes: of files (memoized by path, size, mtime and ctime) and of JSON-able values.

The memo is a folder of one small file per hashed file (`<memo_dir>/file_hashes/`), each written
by a rename, so concurrent writers never lose each other's entries. It is keyed by the path
relative to memo_dir (absolute outside it), the size, the mtime and the ctime: not the device and
inode numbers, which differ between the clients of one network file system, so every node of a
cluster reuses the same hashes. The ctime, which no copy can set, tells a file replaced by one of
the same size and mtime (`cp -p`, `rsync -t`) apart.
"""

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Optional

MEMO_FOLDER = "file_hashes"
_SEEN: dict = {}  # (device, inode, size, mtime, ctime) -> sha256 of what this process already hashed or read
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode())


def sha256_file(path: Path, memo_dir: Optional[Path] = None) -> str:
    """sha256 of a file; with memo_dir, remembered there so big weights are hashed once per cache."""
    path = Path(path).resolve()
    st = path.stat()
    seen_key = _seen_key(st)
    if seen_key in _SEEN:
        return _SEEN[seen_key]
    memo = _memo_file(Path(memo_dir), path, st) if memo_dir else None
    if memo is not None:
        try:
            known = memo.read_text().strip()
        except OSError:
            known = ""
        if _HEX64.fullmatch(known):
            _SEEN[seen_key] = known
            return known
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = _SEEN[seen_key] = h.hexdigest()
    if memo is not None:
        _write(memo, digest)
    return digest


def remember(path: Path, digest: str, memo_dir: Path) -> None:
    """Record a hash computed elsewhere (e.g. in a temp folder before it was renamed to `path`)."""
    path = Path(path).resolve()
    st = path.stat()
    _SEEN[_seen_key(st)] = digest
    _write(_memo_file(Path(memo_dir), path, st), digest)


def forget(folder: Path, memo_dir: Path) -> None:
    """Drop the memo of every file under `folder` (before it is deleted), so the memo does not outgrow the cache."""
    for p in Path(folder).resolve().rglob("*"):
        try:
            if p.is_file():
                _memo_file(Path(memo_dir), p, p.stat()).unlink(missing_ok=True)
        except OSError:
            pass


def _seen_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _memo_file(memo_dir: Path, path: Path, st: os.stat_result) -> Path:
    root = memo_dir.resolve()
    where = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    name = sha256_json([where, st.st_size, st.st_mtime_ns, st.st_ctime_ns])[:40]
    return root / MEMO_FOLDER / name[:2] / name[2:]


def _write(memo: Path, digest: str) -> None:
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.parent / f".{memo.name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(digest)
        os.replace(tmp, memo)
    except OSError:  # a read-only or full cache: the hash is still right, only not remembered
        pass
