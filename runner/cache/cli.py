"""`qrun-cache`: list and prune the stage cache.

    qrun-cache list                       # every entry: kind, key, size, age, label
    qrun-cache prune --kind artifacts     # delete all artifacts (they are recomputed on demand)
    qrun-cache prune --older-than 30      # entries created more than 30 days ago
    qrun-cache prune --all --dry-run      # show what would go
Every prune also removes temp folders (entries being built or deleted) whose process died on this
host (with --kind: of that kind only); a live process's temp is never removed, however old. Temps
without an owner file (older versions) go once nothing in them changed for an hour.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from runner.cache import _remove, entries, stale_temps, temps_elsewhere
from runner.cache.lock import is_lock, remove_if_dead


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="qrun-cache", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--dir",
        default=os.environ.get("QRUN_CACHE_DIR", ".qrun_cache"),
        help="cache root (default: $QRUN_CACHE_DIR or .qrun_cache)",
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    prune = sub.add_parser("prune")
    prune.add_argument(
        "--kind", help="only this kind (artifacts, references, models, gguf_base, imatrix, tokens, packages, ...)"
    )
    prune.add_argument("--older-than", type=float, metavar="DAYS", help="only entries created more than DAYS ago")
    prune.add_argument("--all", action="store_true", help="every entry (with --kind: every entry of that kind)")
    prune.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    root = Path(args.dir).expanduser().resolve()
    if not root.is_dir():
        print(
            f"error: --dir: no cache at '{root}' -- fix: pass the cache folder (cache.dir / QRUN_CACHE_DIR)",
            file=sys.stderr,
        )
        return 2
    now = time.time()
    if args.cmd == "list":
        total = 0
        print(f"{'kind':<12} {'key':<32} {'size':>9} {'age':>7}  label")
        for kind, key, path, facts in entries(root):
            size = _size(path)
            total += size
            age_d = (now - facts.get("created", now)) / 86400
            print(f"{kind:<12} {key:<32} {_human(size):>9} {age_d:>6.1f}d  {facts.get('label', '')}")
        print(f"total {_human(total)} in {root}")
        return 0
    if not (args.all or args.older_than is not None or args.kind):
        print("error: prune: say what to delete -- fix: add --kind KIND, --older-than DAYS or --all", file=sys.stderr)
        return 2
    freed, count = 0, 0
    for kind, key, path, facts in entries(root):
        if args.kind and kind != args.kind:
            continue
        if args.older_than is not None and now - facts.get("created", now) < args.older_than * 86400:
            continue
        freed += _size(path)
        count += 1
        print(f"{'would delete' if args.dry_run else 'deleted'} {kind}/{key} {facts.get('label', '')}")
        if not args.dry_run:
            _remove(path)
    temps = 0
    for tmp, why in stale_temps(root, kind=args.kind):
        freed += _size(tmp) if tmp.is_dir() else tmp.stat().st_size
        temps += 1
        print(f"{'would delete' if args.dry_run else 'deleted'} temp {tmp.relative_to(root)} ({why})")
        if args.dry_run:
            continue
        if is_lock(tmp):
            remove_if_dead(tmp)  # moved aside and checked first: a waiter may be taking it over right now
        elif tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    for tmp in temps_elsewhere(root, kind=args.kind):
        print(
            f"kept temp {tmp.relative_to(root)}: its process runs on another host (delete it by hand once that job "
            "is over)"
        )
    print(f"{'would free' if args.dry_run else 'freed'} {_human(freed)} in {count} entries and {temps} temp folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
