#!/usr/bin/env bash
# Cells (the tracker's --cell-viewers): origin egress against cell size,
# each row beside the same audience as one mesh, in the same run
# (docs/benchmarks/cells.md).
#
# 1. Live: swarmcast-load live with real edge peers on loopback (WebRTC,
#    no stripes, one first fetcher per mesh): VIEWERS edges as one mesh,
#    in cells of CELL, and in cells of CELL spread as over tracker nodes. Figures: origin copies per segment, offload,
#    stalls, the cells the tracker reports.
# 2. Simulator, stripe model (the tracker's real Cells and Swarm code):
#    SIM_VIEWERS viewers with uplinks 1.5x the bitrate, one mesh and cells
#    of each size in SIM_CELLS.
# 3. Simulator, core model (every viewer's swarm core): CORE_VIEWERS
#    viewers, one mesh and cells of each size in CORE_CELLS.
#
#   scripts/bench-cells.sh
#   VIEWERS=12 CELL=4 SECS=60 SIM_VIEWERS=100000 scripts/bench-cells.sh
#   SKIP_LIVE=1 SKIP_CORE=1 SIM_VIEWERS=100000 SIM_CELLS="20000 10000" scripts/bench-cells.sh
#
# Every process is started by swarmcast-load, which stops them by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

VIEWERS=${VIEWERS:-12}
CELL=${CELL:-4}
SECS=${SECS:-60}
SIM_VIEWERS=${SIM_VIEWERS:-10000}
SIM_SECS=${SIM_SECS:-120}
SIM_CELLS=${SIM_CELLS:-"5000 2000 1000 500"}
CORE_VIEWERS=${CORE_VIEWERS:-1000}
CORE_SECS=${CORE_SECS:-120}
CORE_CELLS=${CORE_CELLS:-"250 100"}

cargo build --release --locked -q -p swarmcast-load -p swarmcast-tracker -p swarmcast-origin -p swarmcast-edge
LOAD=target/release/swarmcast-load
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

row() { # label json [event]
  python3 - "$1" "$2" "${3:-}" <<'EOF'
import json, sys
label, path, event = sys.argv[1], sys.argv[2], sys.argv[3]
d = json.load(open(path))
if event:
    e = d["events"][0]
    print(f"{label:<28} copies/segment {e['origin_copies_per_segment']:7.2f}  offload {e['offload']*100:6.2f} %  "
          f"stalls {e['stalls']}  cells {e['cells']}")
else:
    print(f"{label:<28} copies/segment {d['origin_copies_per_segment']:8.2f}  offload {d['offload']*100:6.2f} %  "
          f"rebuffering {d['rebuffering_ratio']*100:.4f} %  spread to 95 % p50 {d['spread_time_ms']['p50_of_95']:.0f} ms  "
          f"wall {d['wall_s']:.1f} s")
EOF
}

if [ -z "${SKIP_LIVE:-}" ]; then
  echo "== live: $VIEWERS edge peers, ${SECS} s measured, no stripes"
  # The third row spreads the cells as over tracker nodes: joiners beyond
  # the first cell are redirected and reconnect with their cell, each cell
  # a swarm fed from the stream's home through --tier-url (here the same
  # tracker, so each cell is a task of its own).
  port=$((20000 + RANDOM % 20000))
  for run in one cells tier; do
    case $run in
      one) extra=(--tracker-arg=--cell-viewers=0); label="one mesh" ;;
      cells) extra=(--tracker-arg=--cell-viewers="$CELL"); label="cells of $CELL" ;;
      tier) extra=(--tracker-arg=--cell-viewers="$CELL" --tracker-arg=--listen=127.0.0.1:$port
                   --tracker-arg=--tier-url=ws://127.0.0.1:$port/v1/ws)
            label="cells of $CELL, redirected" ;;
    esac
    "$LOAD" live --viewers "$VIEWERS" --duration "$SECS" --warmup 10 --renditions 360p \
      --mode swarm --tracker-arg=--stripes=0 --tracker-arg=--min-first-fetchers=1 \
      "${extra[@]}" --json "$OUT/live-$run.json" >/dev/null 2>"$OUT/live-$run.err" ||
      { cat "$OUT/live-$run.err"; exit 1; }
    row "$label" "$OUT/live-$run.json" event
  done
fi

# sim MODEL VIEWERS SECS CELLS...: one row per cell size, one mesh first.
sim() {
  local model=$1 viewers=$2 secs=$3 c label
  shift 3
  for c in 0 "$@"; do
    "$LOAD" sim --scenario scenarios/upload-1.5x.toml --viewers "$viewers" --duration "$secs" \
      --model "$model" --policy plan --cell-viewers "$c" --json "$OUT/$model-$c.json" >/dev/null 2>&1
    if [ "$c" = 0 ]; then label="one mesh"; else label="cells of $c"; fi
    row "$label" "$OUT/$model-$c.json"
  done
}

echo "== simulator, stripe model: $SIM_VIEWERS viewers x ${SIM_SECS} s, uplinks 1.5x"
# shellcheck disable=SC2086 # a list of sizes
sim stripe "$SIM_VIEWERS" "$SIM_SECS" $SIM_CELLS

[ -n "${SKIP_CORE:-}" ] && exit 0
echo "== simulator, core model: $CORE_VIEWERS viewers x ${CORE_SECS} s, uplinks 1.5x"
# shellcheck disable=SC2086
sim core "$CORE_VIEWERS" "$CORE_SECS" $CORE_CELLS
