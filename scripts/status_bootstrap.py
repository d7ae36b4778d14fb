#!/usr/bin/env python3
"""Bootstrap intervals for status-model macro-F1 from `triage eval status --errors` output.

`triage eval status --data FILE --errors` prints each misclassified row on stderr as a JSON line with
its `index`; every other row was right. From one or two such stderr files this prints macro-F1 and
Closed precision/recall with a 95% bootstrap interval (rows resampled with replacement), and for two
models the paired difference B - A on the same resampled rows, optionally on a row range only.

    triage eval status --data training-data/status/real-dev.jsonl --errors 2> a.err
    triage eval status --data training-data/status/real-dev.jsonl --errors \
        --status-model-dir /tmp/other 2> b.err
    python3 scripts/status_bootstrap.py training-data/status/real-dev.jsonl a.err [b.err] [--rows 233:424]
"""
import json
import random
import sys


def predictions(err_path, gold):
    wrong = {}
    for line in open(err_path, encoding="utf-8"):
        line = line.strip()
        if line.startswith('{"gold"'):
            e = json.loads(line)
            wrong[e["index"]] = e["predicted"]
    return [wrong.get(i, g) for i, g in enumerate(gold)]


def scores(idx, gold, pred):
    f1, closed = 0.0, (0.0, 0.0)
    for lab in ("closed", "in_progress"):
        tp = sum(1 for i in idx if gold[i] == lab and pred[i] == lab)
        p = sum(1 for i in idx if pred[i] == lab)
        s = sum(1 for i in idx if gold[i] == lab)
        pr, rc = (tp / p if p else 0.0), (tp / s if s else 0.0)
        f1 += 2 * pr * rc / (pr + rc) if pr + rc else 0.0
        if lab == "closed":
            closed = (pr, rc)
    return f1 / 2, closed


def main():
    args = sys.argv[1:]
    rows = None
    if "--rows" in args:
        k = args.index("--rows")
        a, b = args[k + 1].split(":")
        rows = (int(a), int(b))
        del args[k : k + 2]
    data, errs = args[0], args[1:]
    gold = [json.loads(l)["label"] for l in open(data, encoding="utf-8") if l.strip()]
    idx = list(range(*rows)) if rows else list(range(len(gold)))
    preds = [predictions(e, gold) for e in errs]
    rng = random.Random(1)
    samples = [[rng.choice(idx) for _ in idx] for _ in range(2000)]
    out = {"data": data, "rows": len(idx), "models": []}
    for e, p in zip(errs, preds):
        f, (cp, cr) = scores(idx, gold, p)
        bs = sorted(scores(s, gold, p)[0] for s in samples)
        out["models"].append({"errors": e, "macro_f1": round(f, 4), "closed_precision": round(cp, 4),
                              "closed_recall": round(cr, 4),
                              "macro_f1_95": [round(bs[50], 4), round(bs[1950], 4)]})
    if len(preds) == 2:
        d = sorted(scores(s, gold, preds[1])[0] - scores(s, gold, preds[0])[0] for s in samples)
        out["paired_difference_b_minus_a"] = {"mean": round(sum(d) / len(d), 4),
                                              "95": [round(d[50], 4), round(d[1950], 4)]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
