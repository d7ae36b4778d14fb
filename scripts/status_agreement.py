#!/usr/bin/env python3
"""Agreement between a status data file's labels and a second, blind labelling of the same rows.

The second labelling is a JSON Lines file with one `{"index", "label", "kind"}` per row of the
data file (written from `scripts/status_blind_print.py`'s output, which shows only the texts).
Prints, per pair of files: rows, raw agreement, Cohen's kappa, and the second reading scored
against the first as if it were a model (macro-F1, Closed precision / recall), plus kind agreement
on the rows where the labels agree. The last stdout line is one JSON object with every file.

    python3 scripts/status_agreement.py training-data/status/real-dev.jsonl SECOND.jsonl [DATA SECOND ...]
    python3 scripts/status_agreement.py --disagreements training-data/status/real-dev.jsonl SECOND.jsonl

With `--errors`, the arguments are triples DATA SECOND ERR, ERR being the stderr of
`triage eval status --data DATA --errors`: it also scores that model against DATA's labels on all
rows and on the rows where the two readings agree (the labels two readings confirm).
"""
import json
import sys

LABELS = ("closed", "in_progress")


def load(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def f1(p, r):
    return 2 * p * r / (p + r) if p + r else 0.0


def agreement(first, second):
    """first, second: lists of labels of the same rows. Returns the metrics as a dict."""
    assert len(first) == len(second)
    n = len(first)
    agree = sum(a == b for a, b in zip(first, second))
    p_o = agree / n
    p_e = sum((first.count(l) / n) * (second.count(l) / n) for l in LABELS)
    kappa = (p_o - p_e) / (1 - p_e) if p_e < 1 else 1.0
    per = {}
    for l in LABELS:
        tp = sum(a == l and b == l for a, b in zip(first, second))
        pred = second.count(l)
        gold = first.count(l)
        p = tp / pred if pred else 0.0
        r = tp / gold if gold else 0.0
        per[l] = {"precision": p, "recall": r, "f1": f1(p, r)}
    macro = sum(per[l]["f1"] for l in LABELS) / len(LABELS)
    return {
        "n": n,
        "agreement": p_o,
        "kappa": kappa,
        "macro_f1": macro,
        "closed_precision": per["closed"]["precision"],
        "closed_recall": per["closed"]["recall"],
        "first_closed": first.count("closed"),
        "second_closed": second.count("closed"),
        "first_closed_second_in_progress": sum(a == "closed" and b == "in_progress" for a, b in zip(first, second)),
        "first_in_progress_second_closed": sum(a == "in_progress" and b == "closed" for a, b in zip(first, second)),
    }


def model_on_agreed_rows(rows, second, err_path):
    """A model's macro-F1 (from its `--errors` stderr) on all rows and where the readings agree."""
    wrong = set()
    for line in open(err_path, encoding="utf-8"):
        if line.startswith("{"):
            wrong.add(json.loads(line)["index"])
    gold = [r["label"] for r in rows]
    flip = {"closed": "in_progress", "in_progress": "closed"}
    pred = [flip[g] if i in wrong else g for i, g in enumerate(gold)]
    agreed = [i for i, (a, b) in enumerate(zip(rows, second)) if a["label"] == b["label"]]
    on_agreed = agreement([gold[i] for i in agreed], [pred[i] for i in agreed])
    return {
        "macro_f1_all_rows": round(agreement(gold, pred)["macro_f1"], 4),
        "errors": len(wrong),
        "agreed_rows": len(agreed),
        "errors_on_agreed_rows": sum(i in wrong for i in agreed),
        "macro_f1_agreed_rows": round(on_agreed["macro_f1"], 4),
    }


def main(argv):
    show = "--disagreements" in argv
    with_errors = "--errors" in argv
    args = [a for a in argv if a not in ("--disagreements", "--errors")]
    k = 3 if with_errors else 2
    if len(args) < k or len(args) % k:
        sys.exit(__doc__)
    out = {}
    pooled_first, pooled_second = [], []
    groups = [args[i : i + k] for i in range(0, len(args), k)]
    for data_path, second_path, *err_path in groups:
        rows = load(data_path)
        second = sorted(load(second_path), key=lambda r: r["index"])
        if [r["index"] for r in second] != list(range(len(rows))):
            sys.exit(f"{second_path}: indexes do not cover the {len(rows)} rows of {data_path}")
        m = agreement([r["label"] for r in rows], [r["label"] for r in second])
        pooled_first += [r["label"] for r in rows]
        pooled_second += [r["label"] for r in second]
        same = [(a, b) for a, b in zip(rows, second) if a["label"] == b["label"]]
        m["kind_agreement_where_labels_agree"] = sum(a.get("kind") == b["kind"] for a, b in same) / max(1, len(same))
        name = data_path.rsplit("/", 1)[-1].removesuffix(".jsonl")
        if err_path:
            m["model"] = model_on_agreed_rows(rows, second, err_path[0])
            print(f"{name}: model {m['model']}", file=sys.stderr)
        out[name] = m
        print(
            f"{name}: n {m['n']}, agreement {m['agreement']:.3f}, kappa {m['kappa']:.3f}, "
            f"macro-F1 {m['macro_f1']:.3f}, Closed P {m['closed_precision']:.3f} R {m['closed_recall']:.3f} "
            f"(first closed->second in_progress {m['first_closed_second_in_progress']}, "
            f"in_progress->closed {m['first_in_progress_second_closed']})",
            file=sys.stderr,
        )
        if show:
            for i, (a, b) in enumerate(zip(rows, second)):
                if a["label"] != b["label"]:
                    text = a["text"].replace("\n", " ")
                    print(f"  {i}\t{a['label']}/{a.get('kind')} -> {b['label']}/{b['kind']}\t{text[:160]}", file=sys.stderr)
    if len(out) > 1:
        out["pooled"] = agreement(pooled_first, pooled_second)
        m = out["pooled"]
        print(
            f"pooled: n {m['n']}, agreement {m['agreement']:.3f}, kappa {m['kappa']:.3f}, "
            f"macro-F1 {m['macro_f1']:.3f}, Closed P {m['closed_precision']:.3f} R {m['closed_recall']:.3f}",
            file=sys.stderr,
        )
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
