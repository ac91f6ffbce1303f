#!/usr/bin/env bash
# Issue 13's bar: two sensors replaying one capture at full speed into one Kafka-protocol
# broker, beside the same two replays writing files only, in alternating rounds of one run.
# Prints per round and mode each sensor's packets/s (its own summary line) and CPU seconds
# (user + system, from /usr/bin/time), the events each published (and per second of its
# replay), and the ratios of the Kafka modes to files only.
#
# Usage: benches/kafka_sensors.sh [ROUNDS] [SCALE]   (default: 2 rounds, synth --scale 10
# --snaplen 128)
# Needs: a tansu broker binary (TANSU=PATH; default /var/tmp/tansu/bin/tansu, else
# /var/tmp/tansu-dev/bin/tansu as scripts/test kafka builds it) and GNU time (/usr/bin/time).
# The broker runs on this machine: on few cores its CPU is taken from the sensors, which is
# why CPU seconds per packet are printed beside the rates.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-2}"
scale="${2:-10}"
tansu="${TANSU:-}"
for t in "$tansu" /var/tmp/tansu/bin/tansu /var/tmp/tansu-dev/bin/tansu; do
    if [ -n "$t" ] && [ -x "$t" ]; then tansu="$t" && break; fi
done
[ -x "$tansu" ] || { echo "no tansu binary: set TANSU" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs GNU time: apt-get install time" >&2; exit 2; }
cargo build --release --features kafka --quiet
bin="$(realpath "${CARGO_TARGET_DIR:-target}/release/mnpflow")"
work="$(mktemp -d)"
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
"$bin" synth --scale "$scale" --snaplen 128 -o "$work/synth.pcap" >/dev/null
# One model, trained once, so that no replay trains.
"$bin" replay "$work/synth.pcap" --truth "$work/synth.truth.csv" --output-dir "$work/model" \
    --data-dir "$work/model" >/dev/null 2>&1
model="$work/model/models/synth.mnp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/broker"
(cd "$work/broker" && exec "$tansu" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine sqlite://tansu.db \
    >tansu.log 2>&1) &
broker_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
for t in alerts flows; do
    "$tansu" topic create "$t" --partitions 3 --broker "tcp://127.0.0.1:$port" >/dev/null
done
printf '[kafka]\nalerts_topic = "alerts"\n' >"$work/alerts.toml"
printf '[kafka]\nalerts_topic = "alerts"\nflows_topic = "flows"\n' >"$work/flows.toml"
echo "capture: synth --scale $scale ($(stat -c %s "$work/synth.pcap") bytes); broker: $tansu on 127.0.0.1:$port"
echo "| round | mode | sensor | packets/s | CPU s | events queued / delivered / dropped | events/s |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq "$rounds"); do
    for mode in files alerts flows; do
        pids=()
        for s in 1 2; do
            out="$work/run-$r-$mode-$s"
            args=(replay "$work/synth.pcap" --model "$model" --output-dir "$out" --data-dir "$out"
                --flows jsonl)
            case $mode in
                files) cfg=() ;;
                alerts) cfg=(--config "$work/alerts.toml"); args+=(--kafka "127.0.0.1:$port" --sensor-id "s$s") ;;
                flows) cfg=(--config "$work/flows.toml"); args+=(--kafka "127.0.0.1:$port" --sensor-id "s$s") ;;
            esac
            /usr/bin/time -f "%U %S" -o "$out.time" "$bin" "${cfg[@]}" "${args[@]}" \
                >"$out.out" 2>"$out.err" &
            pids+=($!)
        done
        wait "${pids[@]}"
        for s in 1 2; do
            out="$work/run-$r-$mode-$s"
            pps=$(sed -n 's/^packets .* \([0-9.e+]*\) packets\/s over.*/\1/p' "$out.err")
            secs=$(awk '{print $1 + $2}' "$out.time")
            ev=$(sed -n 's/^kafka     \([0-9]*\) events queued, \([0-9]*\) delivered, \([0-9]*\) dropped.*/\1 \/ \2 \/ \3/p' "$out.err")
            # Events published per second of the replay (queued over the pipeline's time).
            over=$(sed -n 's/^packets .* packets\/s over \([0-9.]*\) s.*/\1/p' "$out.err")
            eps=$(awk -v q="${ev%% *}" -v t="$over" 'BEGIN { if (q != "" && t > 0) printf "%.0f", q / t; else print "-" }')
            echo "| $r | $mode | $s | $pps | $secs | ${ev:--} | $eps |"
            echo "$mode $pps $secs" >>"$work/figures"
        done
    done
done
python3 - "$work/figures" <<'PY'
import sys
from collections import defaultdict
rate, cpu = defaultdict(list), defaultdict(list)
for line in open(sys.argv[1]):
    mode, pps, secs = line.split()
    rate[mode].append(float(pps)); cpu[mode].append(float(secs))
mean = lambda v: sum(v) / len(v)
for mode in ("alerts", "flows"):
    print(f"{mode} / files: packets/s {mean(rate[mode]) / mean(rate['files']):.3f}, "
          f"CPU seconds {mean(cpu[mode]) / mean(cpu['files']):.3f}")
PY
