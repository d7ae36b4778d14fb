#!/usr/bin/env python3
"""Routes real status replies into training-data/status/real-train.jsonl and real-dev.jsonl.

A reply goes to dev when sha1("owner/repo") of its source URL falls in the first third of the
hash range, so every repository's replies stay on one side (no thread leaks between files) and
new rows land on the same side as earlier rows from that repository. New rows go to the seventh
round's files, real-train-7.jsonl and real-dev-6.jsonl (rounds one to six stay as they were:
real-train.jsonl to real-train-6.jsonl, real-dev.jsonl to real-dev-5.jsonl, so numbers reported
on them stay comparable); every real-train* file counts as the train side and every real-dev*
file as the dev side.

    python3 scripts/split_real_status.py NEW_ROWS.jsonl     # append rows (deduplicated by text+url)
    python3 scripts/split_real_status.py --check            # verify the split invariant
"""
import hashlib
import json
import sys
from pathlib import Path

DIR = Path(__file__).resolve().parent.parent / "training-data" / "status"
FILES = {
    "train": DIR / "real-train.jsonl",
    "train-2": DIR / "real-train-2.jsonl",
    "train-3": DIR / "real-train-3.jsonl",
    "train-4": DIR / "real-train-4.jsonl",
    "train-5": DIR / "real-train-5.jsonl",
    "train-6": DIR / "real-train-6.jsonl",
    "train-7": DIR / "real-train-7.jsonl",
    "dev": DIR / "real-dev.jsonl",
    "dev-2": DIR / "real-dev-2.jsonl",
    "dev-3": DIR / "real-dev-3.jsonl",
    "dev-4": DIR / "real-dev-4.jsonl",
    "dev-5": DIR / "real-dev-5.jsonl",
    "dev-6": DIR / "real-dev-6.jsonl",
}
# Which side of the split each file is on; new rows of a side are appended to its APPEND file below.
SIDE = {"train": "train", "train-2": "train", "train-3": "train", "train-4": "train",
        "train-5": "train", "train-6": "train", "train-7": "train", "dev": "dev", "dev-2": "dev",
        "dev-3": "dev", "dev-4": "dev", "dev-5": "dev", "dev-6": "dev"}
APPEND = {"train": "train-7", "dev": "dev-6"}


def repo(url: str) -> str:
    parts = url.split("/")
    return f"{parts[3]}/{parts[4]}".lower()


def side(url: str) -> str:
    h = int(hashlib.sha1(repo(url).encode()).hexdigest()[:8], 16)
    return "dev" if h % 3 == 0 else "train"


def load(path: Path):
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def main() -> int:
    existing = {k: load(p) for k, p in FILES.items()}
    if sys.argv[1:] == ["--check"]:
        bad = [(k, r["url"]) for k, rows in existing.items() for r in rows if side(r["url"]) != SIDE[k]]
        for k, u in bad:
            print(f"{u} is in {k} but belongs to {side(u)}", file=sys.stderr)
        repos = {k: {repo(r["url"]) for r in rows} for k, rows in existing.items()}
        train_repos = set().union(*(repos[k] for k in FILES if SIDE[k] == "train"))
        dev_repos = set().union(*(repos[k] for k in FILES if SIDE[k] == "dev"))
        print(json.dumps({k: {"rows": len(v), "repos": len(repos[k])} for k, v in existing.items()}
                         | {"misplaced": len(bad), "shared_repos": len(train_repos & dev_repos)}))
        return 1 if bad else 0
    seen = {(r["text"], r["url"]) for rows in existing.values() for r in rows}
    added = {v: 0 for v in APPEND.values()}
    for arg in sys.argv[1:]:
        for r in load(Path(arg)):
            for f in ("text", "label", "kind", "url"):
                if not r.get(f):
                    raise SystemExit(f"{arg}: row without {f}: {r}")
            if (r["text"], r["url"]) in seen:
                continue
            seen.add((r["text"], r["url"]))
            r.setdefault("source", "github")
            existing[APPEND[side(r["url"])]].append(r)
            added[APPEND[side(r["url"])]] += 1
    for k, p in FILES.items():
        p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in existing[k]))
    print(json.dumps({"added": added} | {k: len(v) for k, v in existing.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
