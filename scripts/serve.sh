#!/usr/bin/env bash
# Brings the service up on a fresh machine: fetches and verifies the model when absent, builds, and
# runs `triage serve` (configuration from TRIAGE_* variables; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
exec cargo run --release --locked --bin triage -- serve "$@"
