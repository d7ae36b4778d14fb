#!/usr/bin/env bash
# The whole test suite on a fresh machine: model files (verified), a running PostgreSQL for the
# Postgres-backend tests, then every test in release mode (candle is ~30x slower unoptimised).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/fetch-model.sh
bash scripts/ensure-postgres.sh
cargo test --release --locked "$@"
