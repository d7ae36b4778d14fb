#!/usr/bin/env python3
"""Average the role scorers of K grouping models trained with different seeds (issue 14 experiment).

The members must share the configuration, the role-less scorers, the start cues and each role
scorer's features and scales (true for `triage train group` runs that differ only in `--seed`).
A role scorer's score is linear(x) + w2 . relu(W1 x + b1), so the mean of K scores is one scorer
of the same form: linear parts averaged, hidden layers concatenated, output weights divided by K.
The result is an ordinary model directory (model.json only) for `triage eval group --model`.

Usage: python3 scripts/group_average.py OUT_DIR MODEL_DIR MODEL_DIR [...]
"""
import json, sys, os
if len(sys.argv) < 4:
    sys.exit(__doc__)
out = sys.argv[1]; paths = sys.argv[2:]
ms = [json.load(open(os.path.join(p, 'model.json'))) for p in paths]
base = ms[0]; K = len(ms)
for m in ms[1:]:
    assert m['config'] == base['config'] and m['text'] == base['text'] and m['embedding'] == base['embedding']
    assert m['roles']['cues'] == base['roles']['cues']
for r in ['customer', 'agent']:
    for k in ['text', 'embedding']:
        ss = [m['roles'][r][k] for m in ms]
        s0 = ss[0]
        for s in ss[1:]:
            assert s['features'] == s0['features'] and s['scale'] == s0['scale']
        n = len(s0['features'])
        H = sum(s['hidden'] for s in ss)
        w1 = []
        for j in range(n):
            for s in ss:
                h = s['hidden']; w1.extend(s['w1'][j*h:(j+1)*h])
        merged = dict(s0)
        merged['hidden'] = H
        merged['w1'] = w1
        merged['b1'] = [b for s in ss for b in s['b1']]
        merged['w2'] = [w / K for s in ss for w in s['w2']]
        merged['linear'] = [sum(s['linear'][i] for s in ss) / K for i in range(n)]
        base['roles'][r][k] = merged
os.makedirs(out, exist_ok=True)
json.dump(base, open(os.path.join(out, 'model.json'), 'w'), indent=2)
print(json.dumps({"members": paths, "out": out}))
