"""Content hashes: of files (memoized by inode, size and mtime) and of JSON-able values."""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

_MEMO_NAME = "file_hashes.json"
_SEEN: dict = {}  # the memo, as far as this process has read or written it


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_json(value: Any) -> str:
    return sha256_bytes(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode())


def sha256_file(path: Path, memo_dir: Path | None = None) -> str:
    """sha256 of a file; with memo_dir, remembered per (inode, size, mtime) so big weights hash once.

    The inode (not the path) is the key, so a file hashed in a temp folder is known after the
    folder is renamed into the cache.
    """
    path = Path(path).resolve()
    st = path.stat()
    memo_key = f"{st.st_dev}:{st.st_ino}|{st.st_size}|{st.st_mtime_ns}"
    if memo_dir and memo_key in _SEEN:  # this process already knows it: no need to re-read the memo file
        return _SEEN[memo_key]
    memo_file = Path(memo_dir) / _MEMO_NAME if memo_dir else None
    memo = {}
    if memo_file and memo_file.exists():
        try:
            memo = json.loads(memo_file.read_text())
        except ValueError:
            memo = {}
        if memo_key in memo:
            _SEEN.update(memo)
            return memo[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if memo_file:
        _SEEN[memo_key] = memo[memo_key] = digest
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    return digest
