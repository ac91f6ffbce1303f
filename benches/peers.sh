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
# for the quicker one). The tools take turns, ROUNDS rounds (default 5; nfstream in the
# first only: it is slow); each tool's best wall time and best CPU time (user + system, one
# core's work: the per-core rate) count, and "faster by" compares CPU times (Argus runs
# threads and its wall time includes waits on a one-second timer).
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

# One timed run of a command: "wall cpu" in seconds (cpu = user + system), or "n/a" when
# the command fails.
timed() {
    local times
    times=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&1; } 2>&1 ) || { echo "n/a"; return; }
    echo "$times" | awk '{print $1, $2 + $3}'
}

nfstream_run() {
    python3 -c "import sys; from nfstream import NFStreamer; print(sum(1 for _ in NFStreamer(source=sys.argv[1], statistical_analysis=True, n_dissections=0)))" "$1"
}

run_tool() { # tool input
    case $1 in
        mnpflow) timed "$bin" flows --schema unsw -o /dev/null "$2" ;;
        argus) timed argus -X -J -R -S 60 -r "$2" -w "$work/out.argus" ;;
        nfstream) timed nfstream_run "$2" ;;
        tcpdump) timed tcpdump -r "$2" -w "$work/copy.pcap" ;;
    esac
}

rounds=${ROUNDS:-5}
tools=(mnpflow argus nfstream tcpdump)
echo "| input | packets | tool | wall s (best) | CPU s (best) | packets/s per core | mnpflow is faster by (CPU) |"
echo "|---|---|---|---|---|---|---|"
for input in "$work/synth.pcap" "$work/heavy.pcap" "$work/shared.pcapng"; do
    pkts=$(capinfos -c -M "$input" | awk -F': *' '/Number of packets/ {print $2}')
    name=$(basename "$input")
    declare -A wall=() cpu=()
    # Round by round, every tool once per round (nfstream in the first only: it is slow), so
    # that a slow spell of this shared machine falls on every tool alike.
    for round in $(seq "$rounds"); do
        for tool in "${tools[@]}"; do
            [ "$tool" = nfstream ] && [ "$round" -gt 1 ] && continue
            [ "${wall[$tool]:-}" = n/a ] && continue
            t=$(run_tool "$tool" "$input")
            if [ "$t" = n/a ]; then wall[$tool]=n/a; continue; fi
            read -r w c <<<"$t"
            if [ -z "${wall[$tool]:-}" ] || [ "$(echo "$w < ${wall[$tool]}" | bc -l)" = 1 ]; then wall[$tool]=$w; fi
            if [ -z "${cpu[$tool]:-}" ] || [ "$(echo "$c < ${cpu[$tool]}" | bc -l)" = 1 ]; then cpu[$tool]=$c; fi
        done
    done
    for tool in "${tools[@]}"; do
        if [ "${wall[$tool]}" = n/a ]; then
            printf "| %s | %s | %s | n/a (cannot run on this input) | | | |\n" "$name" "$pkts" "$tool"
            continue
        fi
        rate=$(echo "$pkts / ${cpu[$tool]}" | bc -l)
        ratio=$(echo "${cpu[$tool]} / ${cpu[mnpflow]}" | bc -l)
        printf "| %s | %s | %s | %.3f | %.3f | %.0f | %.2fx |\n" "$name" "$pkts" "$tool" "${wall[$tool]}" "${cpu[$tool]}" "$rate" "$ratio"
    done
    unset wall cpu
done
