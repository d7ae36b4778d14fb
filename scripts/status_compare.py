#!/usr/bin/env python3
"""Compare two status models row by row on one labelled file, from `triage eval status
--predictions` output: replies right per kind and label, how many only one model gets right, and
the macro-F1 of the mean of the two models' logits (log-odds of p_closed) at a few weights.

    triage eval status --data F --status-model-dir A --predictions a.jsonl
    triage eval status --data F --status-model-dir B --predictions b.jsonl
    python3 scripts/status_compare.py F a.jsonl b.jsonl
"""
import json
import math
import sys
from collections import defaultdict


def macro_f1(gold, pred):
    f = 0.0
    for lab in (True, False):
        tp = sum(1 for g, p in zip(gold, pred) if g == lab and p == lab)
        fp = sum(1 for g, p in zip(gold, pred) if g != lab and p == lab)
        fn = sum(1 for g, p in zip(gold, pred) if g == lab and p != lab)
        pr = tp / (tp + fp) if tp + fp else 0.0
        rc = tp / (tp + fn) if tp + fn else 0.0
        f += 2 * pr * rc / (pr + rc) if pr + rc else 0.0
    return f / 2


def main():
    data, a_path, b_path = sys.argv[1:4]
    rows = [json.loads(l) for l in open(data, encoding="utf-8") if l.strip()]
    a = [json.loads(l) for l in open(a_path)]
    b = [json.loads(l) for l in open(b_path)]
    assert len(rows) == len(a) == len(b), "the files have different row counts"
    gold = [r["label"] == "closed" for r in rows]
    by_kind = defaultdict(lambda: [0, 0, 0])
    for r, x, y in zip(rows, a, b):
        k = f'{r.get("kind") or "(none)"}/{r["label"]}'
        by_kind[k][0] += 1
        by_kind[k][1] += x["predicted"] == r["label"]
        by_kind[k][2] += y["predicted"] == r["label"]
    only_a = sum(1 for r, x, y in zip(rows, a, b) if x["predicted"] == r["label"] != y["predicted"])
    only_b = sum(1 for r, x, y in zip(rows, a, b) if y["predicted"] == r["label"] != x["predicted"])

    def logit(p):
        p = min(max(p, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))

    mean = {}
    for w in (0.0, 0.25, 0.5, 0.75, 1.0):
        pred = [(1 - w) * logit(x["p_closed"]) + w * logit(y["p_closed"]) > 0 for x, y in zip(a, b)]
        mean[str(w)] = round(macro_f1(gold, pred), 4)
    print(json.dumps({
        "rows": len(rows),
        "right_by_kind": {k: {"rows": v[0], "a": v[1], "b": v[2]}
                          for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1][0])},
        "only_a_right": only_a,
        "only_b_right": only_b,
        "logit_mean_macro_f1_by_weight_of_b": mean,
    }))


if __name__ == "__main__":
    main()
