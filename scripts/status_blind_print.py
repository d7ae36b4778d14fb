#!/usr/bin/env python3
"""Print only the index and text of a status data file's rows, for a blind second labelling.

No label, kind, weak label or model output is printed.

    python3 scripts/status_blind_print.py training-data/status/real-dev.jsonl [START [END]]
"""
import json
import sys

path = sys.argv[1]
start = int(sys.argv[2]) if len(sys.argv) > 2 else 0
end = int(sys.argv[3]) if len(sys.argv) > 3 else None
rows = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
for i, text in enumerate(rows[start:end], start):
    print(f"=== {i}")
    print(text)
