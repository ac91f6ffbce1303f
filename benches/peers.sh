#!/usr/bin/env bash
# Flow engine against its peers, on the same input, in one run.
#
#   benches/peers.sh [SCALE]      (default SCALE 100: about 3 million packets)
#
# Inputs: a synthetic capture (`mnpflow synth --scale SCALE --snaplen 128`, about 12 packets
# per flow), the flow-heavy mix (`benches/flow_heavy.py 57`: the shared Ethernet captures
# replayed 57 times with shifted addresses, 2.0 M packets, 3.2 packets per flow) and the
# concatenation of every shared capture (`mergecap -a`, pcapng). Peers: Argus 3 (writing its
# binary records; the UNSW-NB15 base), nfstream (flows with statistical features), and a
# plain `tcpdump -r -w` copy without decoding. mnpflow writes UNSW-NB15 CSV records with
# every feature, built with the `release-lto` profile (the build to deploy; PROFILE=release
# for the quicker one). Each tool runs 3 times (nfstream once: it is slow); the best wall
# time and the best CPU time (user + system, one core's work: the per-core rate) count, and
# "faster by" compares CPU times (Argus's wall time includes waits on a one-second timer).
# Needs: argus-server, tcpdump, wireshark-common (mergecap), python3 -m pip install nfstream.
set -euo pipefail
cd "$(dirname "$0")/.."
scale=${1:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mnpflow-target}"
profile=${PROFILE:-release-lto}
cargo build --profile "$profile" -q
bin="$CARGO_TARGET_DIR/$profile/mnpflow"

"$bin" synth --scale "$scale" --snaplen 128 -o "$work/synth.pcap" 2>/dev/null
python3 benches/flow_heavy.py "${HEAVY_ROUNDS:-57}" "$work/heavy.pcap" >/dev/null
mapfile -t shared < <(find ../shared/data/captures -name '*.pcap' -o -name '*.pcapng' | sort)
mergecap -a -F pcapng -w "$work/shared.pcapng" "${shared[@]}"

best() { # best wall and best CPU (user + system) seconds of N runs of a command
    local n=$1; shift
    local wall="" cpu="" times w c
    for _ in $(seq "$n"); do
        times=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&1; } 2>&1 ) || { echo "n/a"; return; }
        w=$(echo "$times" | awk '{print $1}')
        c=$(echo "$times" | awk '{print $2 + $3}')
        if [ -z "$wall" ] || [ "$(echo "$w < $wall" | bc -l)" = 1 ]; then wall=$w; fi
        if [ -z "$cpu" ] || [ "$(echo "$c < $cpu" | bc -l)" = 1 ]; then cpu=$c; fi
    done
    echo "$wall $cpu"
}

nfstream_run() {
    python3 -c "import sys; from nfstream import NFStreamer; print(sum(1 for _ in NFStreamer(source=sys.argv[1], statistical_analysis=True, n_dissections=0)))" "$1"
}

echo "| input | packets | tool | wall s (best) | CPU s (best) | packets/s per core | mnpflow is faster by (CPU) |"
echo "|---|---|---|---|---|---|---|"
for input in "$work/synth.pcap" "$work/heavy.pcap" "$work/shared.pcapng"; do
    pkts=$(capinfos -c -M "$input" | awk -F': *' '/Number of packets/ {print $2}')
    name=$(basename "$input")
    ours=$(best 3 "$bin" flows --schema unsw -o /dev/null "$input")
    for tool in mnpflow argus nfstream tcpdump; do
        case $tool in
            mnpflow) t=$ours ;;
            argus) t=$(best 3 argus -X -J -R -S 60 -r "$input" -w "$work/out.argus") ;;
            nfstream) t=$(best 1 nfstream_run "$input") ;;
            tcpdump) t=$(best 3 tcpdump -r "$input" -w "$work/copy.pcap") ;;
        esac
        if [ "$t" = n/a ]; then
            printf "| %s | %s | %s | n/a (cannot run on this input) | | | |\n" "$name" "$pkts" "$tool"
            continue
        fi
        read -r wall cpu <<<"$t"
        rate=$(echo "$pkts / $cpu" | bc -l)
        ratio=$(echo "$cpu / ${ours#* }" | bc -l)
        printf "| %s | %s | %s | %.3f | %.3f | %.0f | %.2fx |\n" "$name" "$pkts" "$tool" "$wall" "$cpu" "$rate" "$ratio"
    done
done
