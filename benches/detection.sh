#!/usr/bin/env bash
# The detection benchmark on captures: every scenario in scenarios/ through mnpflow's methods,
# then the peers (benches/detection_peers.py: isolation forest, random forest, DevNet when
# deepod is installed, the authors' reference MNPWAD when MNPWAD_REF is set) on the very same
# exported rows.
#
# Usage: benches/detection.sh [RUNS] [SCENARIO.toml...]   (default: 3 runs, scenarios/*.toml)
# Needs: a release build; for the peers a Python with scikit-learn and numpy
# (PYTHON=/path/to/python, default python3). MNPWAD_REF=DIR: a checkout of the reference
# (Dongzhijin/MNPWAD, not part of this repository; PYTHON then needs torch 1.13, pandas,
# numpy<2); the peers then run with OMP_NUM_THREADS=1 unless it is set (one thread, as the
# published reference figures).
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
shift || true
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(scenarios/*.toml)
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/mnpflow"
rows="$(mktemp -d)"
trap 'rm -rf "$rows"' EXIT
for s in "${scenarios[@]}"; do
    "$bin" eval --scenario "$s" --runs "$runs" --export "$rows"
done
if [ -n "${MNPWAD_REF:-}" ]; then
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" "${PYTHON:-python3}" benches/detection_peers.py \
        --ref-dir "$MNPWAD_REF" "$rows"
else
    "${PYTHON:-python3}" benches/detection_peers.py "$rows"
fi
