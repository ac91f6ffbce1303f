#!/usr/bin/env bash
# Training wall time and quality: mnpflow against the authors' MNPWAD reference (PyTorch),
# on this machine, on the same rows (the reference split files), one thread each, one
# program at a time.
#
#   benches/train_vs_reference.sh REF_DIR [SEEDS] [TABLE...]
#
# REF_DIR: a checkout of the reference (Dongzhijin/MNPWAD: MNPWAD.py, model.py, utils.py,
# utils_pretrain.py, Dataset.py); it is not part of this repository. PYTHON (default python3)
# must have torch 1.13, scikit-learn, pandas and numpy<2. SEEDS default 42,43,44 (the seeds
# of the published reference figures). TABLE: names of ../shared/reference/splits/*.split.csv
# (default: all eight). Prints a markdown table: mean fit seconds of each, their ratio, AUC-PR
# mean +- std of each and the difference of the means; per-seed lines go to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:?usage: benches/train_vs_reference.sh REF_DIR [SEEDS] [TABLE...]}
seeds=${2:-42,43,44}
shift $(( $# >= 2 ? 2 : 1 ))
tables=("$@")
[ ${#tables[@]} -gt 0 ] || tables=(annthyroid cardio pendigits thyroid unsw-analysis unsw-backdoor unsw-dos unsw-reconnaissance)
python=${PYTHON:-python3}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mnpflow-target}"
cargo build --release -q
bin="$CARGO_TARGET_DIR/release/mnpflow"
nseeds=$(echo "$seeds" | tr ',' '\n' | wc -l)
first=${seeds%%,*}

table_file() {
    case $1 in
        unsw-*) echo "../shared/reference/tables/$1.csv" ;;
        *) echo "../shared/data/tables/adbench-$1.csv" ;;
    esac
}

# One field of the reference's JSON lines on standard input, a value per line.
ref_field() { "$python" -c 'import sys, json; [print(json.loads(l)[sys.argv[1]]) for l in sys.stdin if l.strip()]' "$1"; }
# One field of mnpflow eval's per-seed lines: the word after NAME.
our_field() { awk -v name="$1" '{for(i=1;i<NF;i++) if($i==name) print $(i+1)}'; }
# Mean and standard deviation (population, as numpy's default) of numbers on standard input.
stats() { "$python" -c 'import sys, statistics as st; v=[float(x) for x in sys.stdin.read().split()]; print(f"{st.fmean(v)} {st.pstdev(v)}")'; }

echo "| table | reference fit s | mnpflow fit s | mnpflow faster by | reference AUC-PR | mnpflow AUC-PR | delta |"
echo "|---|---|---|---|---|---|---|"
for t in "${tables[@]}"; do
    file=$(table_file "$t")
    split=../shared/reference/splits/$t.split.csv
    ref_out=$("$python" benches/reference/run_reference.py --ref-dir "$ref" --table "$file" \
        --split "$split" --seeds "$seeds" 2>/dev/null)
    echo "$ref_out" >&2
    ours_out=$(RAYON_NUM_THREADS=1 "$bin" eval --quiet --table "$file" --split "$split" \
        --runs "$nseeds" --seed "$first" 2>&1 | grep '^seed ')
    echo "$ours_out" >&2
    ref_fit=$(echo "$ref_out" | ref_field fit_s | stats)
    ref_pr=$(echo "$ref_out" | ref_field auc_pr | stats)
    our_fit=$(echo "$ours_out" | our_field fit | stats)
    our_pr=$(echo "$ours_out" | our_field AUC-PR | stats)
    read -r rf _ <<<"$ref_fit"; read -r of _ <<<"$our_fit"
    read -r rp rps <<<"$ref_pr"; read -r op ops <<<"$our_pr"
    printf "| %s | %.1f | %.1f | %.2fx | %.3f+-%.3f | %.3f+-%.3f | %+.3f |\n" "$t" "$rf" "$of" \
        "$(echo "$rf / $of" | bc -l)" "$rp" "$rps" "$op" "$ops" "$(echo "$op - $rp" | bc -l)"
done
