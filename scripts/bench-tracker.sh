#!/usr/bin/env bash
# Tracker macro benchmark: a real swarmcast-tracker process and the
# swarmcast-load tracker generator on loopback, each pinned to its own core
# (tracker on CPU 0, generator on CPU 1) so neither steals the other's time.
#
#   scripts/bench-tracker.sh                 # 10,000 peers, 3 rounds
#   PEERS=2000 ROUNDS=1 scripts/bench-tracker.sh
#   TRACKER_ARGS="--cell-viewers 1000" scripts/bench-tracker.sh   # extra tracker flags
#
# Prints one JSON report per round (see swarmcast-load tracker --help) and a
# summary line. Every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PEERS=${PEERS:-10000}
ROUNDS=${ROUNDS:-3}
SEGMENTS=${SEGMENTS:-10}
SATURATION=${SATURATION:-10}
SECRET=bench-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWARMCAST_LOG=warn

cargo build --release -q -p swarmcast-tracker -p swarmcast-load
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }

tracker_pid=""
cleanup() { [ -n "$tracker_pid" ] && kill "$tracker_pid" 2>/dev/null || true; }
trap cleanup EXIT

echo "# $(date -u +%F) $(nproc) cores, peers=$PEERS segments=$SEGMENTS saturation=${SATURATION}s tracker_args=${TRACKER_ARGS:-}"
out=$(mktemp -d)
for round in $(seq 1 "$ROUNDS"); do
  port=$((20000 + RANDOM % 20000))
  # Rate limits raised so the saturation phase measures the tracker, not
  # its per-session limits.
  taskset -c 0 target/release/swarmcast-tracker --listen "127.0.0.1:$port" --token-secret "$SECRET" \
    --msgs-per-sec 100000 --msg-burst 200000 ${TRACKER_ARGS:-} >"$out/tracker.out" 2>"$out/tracker.err" &
  tracker_pid=$!
  for _ in $(seq 50); do grep -q "listening on" "$out/tracker.out" 2>/dev/null && break; sleep 0.1; done
  timeout 600 taskset -c 1 target/release/swarmcast-load tracker --tracker "127.0.0.1:$port" \
    --token-secret "$SECRET" --tracker-pid "$tracker_pid" --peers "$PEERS" --segments "$SEGMENTS" \
    --saturation-secs "$SATURATION" --json "$out/round$round.json" >/dev/null
  kill "$tracker_pid"; wait "$tracker_pid" 2>/dev/null || true; tracker_pid=""
  cat "$out/round$round.json"; echo
  python3 - "$out/round$round.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"round: peers={r['peers_joined']} p99_publish_to_peer={r['latency_p99_ms']:.0f}ms "
      f"reach_all_max={r['reach_all_max_ms']:.0f}ms rss_per_idle_peer={r['rss_per_idle_peer']/1024:.2f}KiB "
      f"saturation={r['saturation_msgs_per_sec']:.0f}msg/s at {r['saturation_cpu_cores']:.2f} tracker cores "
      f"deliveries={r['deliveries']}/{r['deliveries_expected']}")
PY
done
