#!/usr/bin/env python3
"""Pooled macro-F1 / Closed precision / Closed recall of a status model's metadata.json over its
dev file and the --eval files whose path contains one of the given names (default: the real files
real-dev-2, real-train-2, real-train-3), by summing their confusion matrices.

    python3 scripts/status_pooled.py models/status/metadata.json /tmp/m/metadata.json

With --eval, pools the last-line JSON objects of `triage eval status` runs instead (one file per
run, all pooled together), e.g. real-dev + real-dev-2 + real-dev-3 for one model:

    for f in real-dev real-dev-2 real-dev-3; do
      triage eval status --status-model-dir M --data training-data/status/$f.jsonl | tail -1 > /tmp/$f.json
    done
    python3 scripts/status_pooled.py --eval /tmp/real-dev.json /tmp/real-dev-2.json /tmp/real-dev-3.json
"""
import json
import sys

NAMES = ("real-dev-2", "real-train-2", "real-train-3")


def pooled(path, names=NAMES, parts=None):
    if parts is None:
        m = json.load(open(path))
        parts = [m["dev_metrics"]] + [
            e["metrics"] for e in m["evaluations"] if any(n in e["file"]["path"] for n in names)
        ]
    labels = ("closed", "in_progress")
    c = {g: {p: sum(x["confusion"][g][p] for x in parts) for p in labels} for g in labels}
    f1s = {}
    for l in labels:
        o = labels[1 - labels.index(l)]
        tp, fp, fn = c[l][l], c[o][l], c[l][o]
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1s[l] = (2 * p * r / (p + r) if p + r else 0.0, p, r)
    n = sum(sum(v.values()) for v in c.values())
    return n, (f1s["closed"][0] + f1s["in_progress"][0]) / 2, f1s["closed"][1], f1s["closed"][2]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--eval"]:
        parts = [json.loads(open(p).read().strip().splitlines()[-1]) for p in sys.argv[2:]]
        n, f1, p, r = pooled(None, parts=parts)
        print(json.dumps({"eval": sys.argv[2:], "model": sorted({x.get("model") for x in parts}),
                          "rows": n, "macro_f1": round(f1, 4), "closed_precision": round(p, 4),
                          "closed_recall": round(r, 4)}))
        sys.exit(0)
    for path in sys.argv[1:]:
        n, f1, p, r = pooled(path)
        print(json.dumps({"metadata": path, "rows": n, "macro_f1": round(f1, 4),
                          "closed_precision": round(p, 4), "closed_recall": round(r, 4)}))
