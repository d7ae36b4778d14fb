#!/usr/bin/env python3
"""Probe, not the product: would fine-tuning MiniLM's top encoder layers (issue "status model",
option b) beat the committed head over frozen embeddings on the dev file? PyTorch +
sentence-transformers (the ../torch-venv of scripts/bench_embed.py), same model files, same data.

  ../torch-venv/bin/python scripts/status_finetune_probe.py [--top 2] [--epochs 6] [--seeds 1 2]

Trains the top N encoder layers and a linear head over the mean-pooled, L2-normalised embedding
with cross-entropy (AdamW, lr 3e-5 for the encoder, 1e-3 for the head, batch 16), and prints dev
macro-F1 and Closed precision/recall after every epoch, plus logistic regression on the frozen
embeddings for reference. The dev file is scored every epoch, so picking an epoch from it is
optimistic, as for the committed model. Last line: one JSON object with every score.
"""
import argparse, json, random, sys, time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_score, recall_score

ap = argparse.ArgumentParser()
ap.add_argument("--model-dir", default="models/all-MiniLM-L6-v2")
ap.add_argument("--train", nargs="+", default=["training-data/status/train.jsonl", "training-data/status/train-github.jsonl"])
ap.add_argument("--dev", default="training-data/status/dev.jsonl")
ap.add_argument("--top", type=int, default=2, help="encoder layers trained (of 6)")
ap.add_argument("--epochs", type=int, default=6)
ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
ap.add_argument("--threads", type=int, default=2)
args = ap.parse_args()
torch.set_num_threads(args.threads)
LABELS = {"in_progress": 0, "closed": 1}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load(paths):
    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    return [r["text"] for r in rows], np.array([LABELS[r["label"]] for r in rows])


def scores(y, p):
    return dict(macro_f1=round(f1_score(y, p, average="macro"), 4),
                closed_precision=round(precision_score(y, p), 4), closed_recall=round(recall_score(y, p), 4))


xtr, ytr = load(args.train)
xdv, ydv = load([args.dev])
results = {"train_rows": len(xtr), "dev_rows": len(xdv), "top_layers": args.top, "frozen_logreg": {}, "finetuned": {}}

base = SentenceTransformer(args.model_dir, device="cpu")
etr = base.encode(xtr, batch_size=64, normalize_embeddings=True)
edv = base.encode(xdv, batch_size=64, normalize_embeddings=True)
for c in (1, 4, 16):
    s = scores(ydv, LogisticRegression(C=c, max_iter=2000).fit(etr, ytr).predict(edv))
    results["frozen_logreg"][f"C={c}"] = s
    log(f"frozen embeddings, logistic regression C={c}: {s}")

for seed in args.seeds:
    torch.manual_seed(seed)
    random.seed(seed)
    model = SentenceTransformer(args.model_dir, device="cpu")
    bert, tok = model[0].auto_model, model.tokenizer
    for p in bert.parameters():
        p.requires_grad = False
    trained = [p for layer in bert.encoder.layer[len(bert.encoder.layer) - args.top:] for p in layer.parameters()]
    for p in trained:
        p.requires_grad = True
    head = torch.nn.Linear(bert.config.hidden_size, 2)
    opt = torch.optim.AdamW([{"params": trained, "lr": 3e-5}, {"params": head.parameters(), "lr": 1e-3}],
                            weight_decay=0.01)

    def logits(texts):
        b = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        out = bert(**b).last_hidden_state
        mask = b["attention_mask"].unsqueeze(-1).float()
        e = torch.nn.functional.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)
        return head(e * 20)  # unit vectors: scale so that the head's logits can grow

    order = list(range(len(xtr)))
    per_epoch = []
    for epoch in range(args.epochs):
        started = time.time()
        bert.train()
        random.shuffle(order)
        for i in range(0, len(order), 16):
            batch = order[i:i + 16]
            loss = torch.nn.functional.cross_entropy(logits([xtr[j] for j in batch]), torch.tensor(ytr[batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        bert.eval()
        with torch.no_grad():
            pred = np.concatenate([logits(xdv[i:i + 64]).argmax(-1).numpy() for i in range(0, len(xdv), 64)])
        s = scores(ydv, pred)
        per_epoch.append(s)
        log(f"top {args.top} layers, seed {seed}, epoch {epoch + 1} ({time.time() - started:.0f} s): {s}")
    results["finetuned"][f"seed={seed}"] = per_epoch

print(json.dumps(results))
