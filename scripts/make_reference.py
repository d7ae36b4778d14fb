#!/usr/bin/env python3
"""Reference embeddings for the parity test, from the Python reference implementation
(sentence-transformers on PyTorch, CPU, f32).

Run once by a developer (CI only reads the committed output):
  python3 -m venv ../torch-venv && ../torch-venv/bin/pip install torch sentence-transformers
  ../torch-venv/bin/python scripts/make_reference.py models/all-MiniLM-L6-v2 \
      tests/fixtures/parity-inputs.json tests/fixtures/parity-reference.json
"""
import json
import sys

import torch
import sentence_transformers
from sentence_transformers import SentenceTransformer

model_dir, inputs_path, out_path = sys.argv[1:4]
texts = json.load(open(inputs_path))
model = SentenceTransformer(model_dir, device="cpu")
assert model.max_seq_length == 256, model.max_seq_length
with torch.inference_mode():
    # One at a time: no padding at all, the cleanest reference.
    vecs = [model.encode(t, normalize_embeddings=False).tolist() for t in texts]
lens = [len(model.tokenizer(t, truncation=True, max_length=256)["input_ids"]) for t in texts]
json.dump(
    {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "produced_by": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, CPU f32",
        "token_counts": lens,
        "embeddings": vecs,
    },
    open(out_path, "w"),
)
print(f"wrote {len(vecs)} reference vectors; token counts {min(lens)}..{max(lens)}", file=sys.stderr)
