#!/usr/bin/env bash
# The tracker's WebTorrent endpoint against aquatic_ws 0.9.0, in the same
# run, with the same load (docs/benchmarks/webtorrent.md):
#
# 1. aquatic_ws_load_test (aquatic's own tester: TLS, one request in flight
#    per connection, 10,000 info hashes, 5 offers per announce) against
#    each tracker, the tracker pinned to CPU 0 with 1 and then 2 worker
#    threads, the tester pinned to CPU 1; rounds alternate which tracker
#    goes first. Figure: the tester's "Average responses per second" over
#    the whole run, connection ramp included (with 2 threads on one core
#    neither tracker let the tester reach its 256 connections under load,
#    so waiting for them, the tester's default, never ends).
# 2. swarmcast-load webtorrent (ours: 10,000 TLS connections, browser-sized
#    SDPs of 2–4 KiB, an open-loop announce rate) against each tracker with
#    1 worker thread: resident memory per connection and offer relay
#    latency p50/p99 (1,000 swarms of about 10 peers).
#
#   scripts/bench-webtorrent.sh                    # 3 rounds of 20 s
#   ROUNDS=1 SECS=10 CONNS=10000 scripts/bench-webtorrent.sh
#
# aquatic_ws is given 64 KiB WebSocket frames, as ours takes: its default
# 16 KiB closes a connection whose announce carries five 3 KiB SDPs in one
# frame, as a browser sends them (seen: two thirds of the offers lost).
# SKIP_LT=1 runs only part 2.
#
# aquatic is built outside this repository (its code is never vendored):
#   cargo install --root /opt/aquatic aquatic_ws@0.9.0 aquatic_ws_load_test@0.9.0
# (without --locked: the locked metrics 0.22.3 no longer compiles with
# rustc 1.95; 0.22.4 does). AQUATIC_BIN points elsewhere.
# Every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

AQ=${AQUATIC_BIN:-/opt/aquatic/bin}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-20}
LT_CONNS=${LT_CONNS:-256}
CONNS=${CONNS:-10000}
RATE=${RATE:-1000}
# Swarms of the latency run: 10,000 connections in 1,000 swarms, about 10
# peers each (in 10,000 swarms most would be alone and relay nothing).
SWARMS=${SWARMS:-1000}
SECRET=bench-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SWARMCAST_LOG=warn

for b in aquatic_ws aquatic_ws_load_test; do
  [ -x "$AQ/$b" ] || { echo "$AQ/$b is missing: cargo install --root /opt/aquatic aquatic_ws@0.9.0 aquatic_ws_load_test@0.9.0" >&2; exit 1; }
done
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
command -v openssl >/dev/null || { echo "openssl is needed for the test certificate" >&2; exit 1; }
cargo build --release -q --locked -p swarmcast-tracker -p swarmcast-load

out=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$out/key.pem" -out "$out/cert.pem" \
  -days 2 -subj "/CN=localhost" 2>/dev/null

# start_tracker IMPL THREADS PORT: starts it on CPU 0, sets $pid.
start_tracker() {
  local impl=$1 threads=$2 port=$3
  if [ "$impl" = ours ]; then
    # The tester puts one connection in many swarms and sends as fast as
    # replies come: the per-connection caps are raised to aquatic's (none).
    TOKIO_WORKER_THREADS=$threads taskset -c 0 target/release/swarmcast-tracker \
      --listen "127.0.0.1:$port" --token-secret "$SECRET" \
      --tls-cert "$out/cert.pem" --tls-key "$out/key.pem" \
      --msgs-per-sec 1000000 --msg-burst 1000000 --wt-max-swarms-per-conn 100000 \
      >"$out/ours.out" 2>"$out/ours.err" &
    pid=$!
    for _ in $(seq 50); do grep -q "listening on" "$out/ours.out" 2>/dev/null && break; sleep 0.1; done
  else
    "$AQ/aquatic_ws" -p | sed \
      -e "s|^socket_workers = .*|socket_workers = $threads|" \
      -e "s|^address = .*|address = \"127.0.0.1:$port\"|" \
      -e "s|^enable_tls = .*|enable_tls = true|" \
      -e "s|^tls_certificate_path = .*|tls_certificate_path = \"$out/cert.pem\"|" \
      -e "s|^tls_private_key_path = .*|tls_private_key_path = \"$out/key.pem\"|" \
      -e "s|^websocket_max_frame_size = .*|websocket_max_frame_size = 65536|" >"$out/aq.toml"
    taskset -c 0 "$AQ/aquatic_ws" -c "$out/aq.toml" >"$out/aq.out" 2>&1 &
    pid=$!
    sleep 1
  fi
}

stop_tracker() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

if [ "${SKIP_LT:-0}" != 1 ]; then
echo "# $(date -u +%F) $(nproc) cores; aquatic_ws_load_test ${SECS}s x $ROUNDS rounds, $LT_CONNS connections, 5 offers"
printf "impl\tthreads\tround\tresponses_per_s\n" >"$out/lt.tsv"
for threads in 1 2; do
  for round in $(seq 1 "$ROUNDS"); do
    order="ours aquatic"
    [ $((round % 2)) = 0 ] && order="aquatic ours"
    for impl in $order; do
      port=$((20000 + RANDOM % 20000))
      start_tracker "$impl" "$threads" "$port"
      "$AQ/aquatic_ws_load_test" -p | sed \
        -e "s|^server_address = .*|server_address = \"127.0.0.1:$port\"|" \
        -e "s|^num_connections_per_worker = .*|num_connections_per_worker = $LT_CONNS|" \
        -e "s|^connection_creation_interval_ms = .*|connection_creation_interval_ms = 1|" \
        -e "s|^duration = .*|duration = $SECS|" \
        -e "s|^measure_after_max_connections_reached = .*|measure_after_max_connections_reached = false|" \
        -e "s|^offers_per_request = .*|offers_per_request = 5|" \
        -e "s|^number_of_torrents = .*|number_of_torrents = 10000|" >"$out/lt.toml"
      timeout $((SECS + 60)) taskset -c 1 "$AQ/aquatic_ws_load_test" -c "$out/lt.toml" >"$out/lt.out" 2>&1 || true
      stop_tracker
      rps=$(sed -n 's/^Average responses per second: //p' "$out/lt.out")
      mix=$(grep -E "^  - (Announce|Offer|Answer|Error)" "$out/lt.out" | tail -4 | tr -s ' ' | tr '\n' ' ')
      echo "$impl threads=$threads round=$round responses/s=${rps:-none} (last 5 s: $mix)"
      printf "%s\t%s\t%s\t%s\n" "$impl" "$threads" "$round" "${rps:-0}" >>"$out/lt.tsv"
    done
  done
done
python3 - "$out/lt.tsv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
for t in ("1", "2"):
    f = lambda i: [float(r["responses_per_s"]) for r in rows if r["impl"] == i and r["threads"] == t]
    o, a = f("ours"), f("aquatic")
    ratios = [x / y for x, y in zip(o, a) if y > 0]
    print(f"threads={t}: ours median {statistics.median(o):,.0f}/s {o}, aquatic median {statistics.median(a):,.0f}/s {a}, "
          f"ratio per round {[round(r, 2) for r in ratios]} median {statistics.median(ratios):.2f}")
PY
fi

echo "# swarmcast-load webtorrent: $CONNS TLS connections, $SWARMS info hashes, 5 offers of 2-4 KiB, $RATE announces/s, ${SECS}s"
for impl in ours aquatic; do
  port=$((20000 + RANDOM % 20000))
  start_tracker "$impl" 1 "$port"
  path=/announce
  [ "$impl" = aquatic ] && path=/
  timeout $((SECS + 300)) taskset -c 1 target/release/swarmcast-load webtorrent \
    --tracker "wss://127.0.0.1:$port$path" --tracker-pid "$pid" --connections "$CONNS" \
    --connect-rate 2000 --info-hashes "$SWARMS" --offers 5 --rate "$RATE" --duration "$SECS" \
    --json "$out/gen-$impl.json" >/dev/null
  stop_tracker
  python3 - "$impl" "$out/gen-$impl.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
per = r["rss_per_connection"] or 0
print(f"{sys.argv[1]}: connections={r['connections']} rss_per_connection={per/1024:.1f}KiB "
      f"offer p50={r['offer_p50_ms']:.2f}ms p99={r['offer_p99_ms']:.2f}ms max={r['offer_max_ms']:.1f}ms "
      f"answer_rtt p50={r['answer_rtt_p50_ms']:.2f}ms p99={r['answer_rtt_p99_ms']:.2f}ms "
      f"offers={r['offers_received']} answers={r['answers_received']} failures={r['failures']} "
      f"connections_lost={r['connections_lost']} "
      f"tracker_cpu={r['run_cpu_cores']:.2f} generator_cpu={r['generator_cpu_cores']:.2f}")
PY
done
echo "raw: $out"
