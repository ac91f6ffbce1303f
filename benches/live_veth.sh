#!/usr/bin/env bash
# Issue 14's live bar: the highest drop-free rate over a veth pair, the sensor beside
# `tcpdump -w /dev/null` on the same interface in the same run. For each capture method
# (fanout: one PACKET_FANOUT socket per flow worker; pcap: one libpcap handle) and each rate,
# two fresh network namespaces joined by a veth pair; in A `mnpflow live` (2 workers, scoring
# on, the bundled capture's model) and tcpdump (the same 16 MiB kernel buffer) capture the
# interface while tcpreplay in B sends the bundled capture LOOPS times at the rate. Prints per
# run the rate tcpreplay reached, what the interface received, and each capturer's packets
# and kernel drops.
#
# Usage (root): benches/live_veth.sh [LOOPS] [RATE...]   (default: 10 loops of 32,353
# packets; rates max 200000 100000 50000, packets/s; max is tcpreplay --topspeed)
# Needs: apt-get install libpcap-dev iproute2 tcpdump tcpreplay
# On 2 cores the sender, the kernel's veth path, tcpdump and the sensor share the CPUs: the
# "max" row shows how fast the sender gets with both capturers running.
set -euo pipefail
cd "$(dirname "$0")/.."
loops="${1:-10}"
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(max 200000 100000 50000)
[ "$(id -u)" = 0 ] || { echo "run as root (network namespaces)" >&2; exit 2; }
for t in ip tcpdump tcpreplay; do
    command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }
done
cargo build --release --features live --quiet
bin="$(realpath "${CARGO_TARGET_DIR:-target}/release/mnpflow")"
capture="$(realpath captures/demo.pcap)"
work="$(mktemp -d)"
a="mnpbenchA$$"
b="mnpbenchB$$"
cleanup() {
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
# One model, trained once on the bundled capture.
"$bin" replay "$capture" --truth captures/demo.truth.csv --output-dir "$work/model" \
    --data-dir "$work/model" >/dev/null 2>&1
model="$work/model/models/demo.mnp"

printf '%-7s %-7s %9s %9s %9s %10s %8s %10s %8s\n' method rate sent sent/s received \
    mnpflow drops tcpdump drops
for method in fanout pcap; do
    for rate in "${rates[@]}"; do
        ip netns add "$a"
        ip netns add "$b"
        ip link add va$$ type veth peer name vb$$
        ip link set va$$ netns "$a"
        ip link set vb$$ netns "$b"
        ip -n "$a" link set va$$ up
        ip -n "$b" link set vb$$ up
        out="$work/$method-$rate"
        mkdir -p "$out"
        ip netns exec "$a" "$bin" live -i va$$ --capture "$method" --workers 2 --rules none \
            --threshold 5% --model "$model" --output-dir "$out" --data-dir "$out/data" \
            2>"$out/live.err" &
        live_pid=$!
        ip netns exec "$a" tcpdump -i va$$ -B 16384 -w /dev/null 2>"$out/tcpdump.err" &
        tcpdump_pid=$!
        for _ in $(seq 100); do
            grep -q "capturing on" "$out/live.err" && grep -q "listening on" "$out/tcpdump.err" && break
            sleep 0.1
        done
        if [ "$rate" = max ]; then pace=(--topspeed); else pace=(--pps "$rate"); fi
        ip netns exec "$b" tcpreplay -i vb$$ "${pace[@]}" -l "$loops" "$capture" >"$out/tcpreplay.out" 2>&1
        sleep 1.5
        received=$(ip netns exec "$a" cat /sys/class/net/va$$/statistics/rx_packets)
        kill -INT "$live_pid" "$tcpdump_pid"
        wait "$live_pid" || true
        wait "$tcpdump_pid" || true
        ip netns del "$a"
        ip netns del "$b"
        sent=$(awk '/Actual:/ {print $2}' "$out/tcpreplay.out")
        pps=$(awk '/Rated:/ {for (i=1;i<=NF;i++) if ($i ~ /pps/) print $(i-1)}' "$out/tcpreplay.out" | head -1)
        read_=$(awk '/^packets / {print $2}' "$out/live.err")
        drops=$(grep -o 'capture: [0-9]* kernel' "$out/live.err" | awk '{print $2}')
        tcap=$(awk '/packets captured/ {print $1}' "$out/tcpdump.err")
        tdrop=$(awk '/dropped by kernel/ {print $1}' "$out/tcpdump.err")
        printf '%-7s %-7s %9s %9s %9s %10s %8s %10s %8s\n' "$method" "$rate" "$sent" "${pps%.*}" \
            "$received" "$read_" "$drops" "$tcap" "$tdrop"
    done
done
