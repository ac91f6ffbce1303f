#!/usr/bin/env bash
# A raw table with text columns against its hand one-hot encoding (issue 16): `mnpflow eval`
# on the raw CSV (text columns one-hot by the reader, the identifier PolicyNumber left out)
# and on the table one-hot encoded by hand as pandas.get_dummies would (numeric columns first,
# then one 0/1 column per category, sorted; PolicyNumber dropped), same seeds.
#
# Usage: benches/text_table.sh [RUNS] [TABLE.csv]
#   TABLE.csv: the public vehicle-insurance fraud table (fraud_oracle.csv, label FraudFound_P);
#   without it a stand-in with the same columns, categories and CRLF line ends is generated
#   (benches/text_table.py standin).
# Needs: a release build and python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/mnpflow"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -n "${2:-}" ]]; then
    raw="$2"
else
    raw="$work/fraud-standin.csv"
    python3 benches/text_table.py standin "$raw"
fi
python3 benches/text_table.py onehot "$raw" "$work/onehot.csv" FraudFound_P PolicyNumber
for t in "$raw" "$work/onehot.csv"; do
    "$bin" eval --table "$t" --label FraudFound_P --runs "$runs" --quiet
done
