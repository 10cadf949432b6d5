#!/usr/bin/env bash
# Macro benchmark of the origin's serving path, side by side with nginx.
#
# GET of a 1 MiB live segment and of a media playlist at 64 concurrent
# connections (wrk), against swarmcast-origin and against nginx serving the
# very same bytes from a tmpfs directory, alternating, in the same run.
# Prints per-round figures, medians, the origin/nginx ratios, and the CPU
# split between the server, wrk and everything else on the machine.
#
# Target (issue): origin >= 1.0x nginx's requests/s for segments and
# playlists, with p99 latency no worse than nginx's.
#
# Usage: scripts/bench-origin.sh
# Environment:
#   ROUNDS=3        rounds per (resource, server)
#   DURATION=10     seconds per wrk run
#   CONNS=64        wrk connections
#   THREADS=2       wrk threads
#   WARMUP=2        seconds of warm-up per (resource, server), 0 for none
#   SKIP_BUILD=1    do not run cargo build (use the existing binary)
#   ORIGIN_BIN=...  origin binary (default: $CARGO_TARGET_DIR/release/swarmcast-origin)
#   SWARMCAST_LOG   origin log filter (default: warn)
#   RESULTS_OUT=... also write the per-round figures there (TSV)
#
# Only 127.0.0.1 is used. Every process started here is stopped on exit.
set -euo pipefail
export LC_ALL=C

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
SEG_BYTES=1048576
NSEG=6
STREAM=bench
RENDITION=r1

cd "$(dirname "$0")/.."
REPO=$(pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
ORIGIN_BIN=${ORIGIN_BIN:-$TARGET_DIR/release/swarmcast-origin}

log() { printf '%s\n' "$*" >&2; }
die() { log "bench-origin: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
ORIGIN_PID=""
NGINX_PID=""
WRK_PID=""
WORK=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n $WRK_PID ]] && kill -0 "$WRK_PID" 2>/dev/null; then
        kill "$WRK_PID" 2>/dev/null
        wait "$WRK_PID" 2>/dev/null
    fi
    if [[ -n $NGINX_PID ]] && kill -0 "$NGINX_PID" 2>/dev/null; then
        # TERM to the master: fast shutdown, it stops its own workers.
        kill -TERM "$NGINX_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null
        wait "$NGINX_PID" 2>/dev/null
    fi
    if [[ -n $ORIGIN_PID ]] && kill -0 "$ORIGIN_PID" 2>/dev/null; then
        kill -TERM "$ORIGIN_PID" 2>/dev/null
        for _ in $(seq 80); do kill -0 "$ORIGIN_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$ORIGIN_PID" 2>/dev/null
        wait "$ORIGIN_PID" 2>/dev/null
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        rm -rf -- "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
apt_updated=0
need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    log "installing $2 (for $1)"
    if [[ $apt_updated == 0 ]]; then apt-get update -qq; apt_updated=1; fi
    # RUNLEVEL=1: do not let the package start a system nginx on port 80.
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}
need wrk wrk
need nginx nginx-light
need curl curl
need python3 python3

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building swarmcast-origin (release)..."
    cargo build --release -p swarmcast-origin
fi
[[ -x $ORIGIN_BIN ]] || die "no origin binary at $ORIGIN_BIN"

WORK=$(mktemp -d /dev/shm/swarmcast-bench-XXXX)
chmod 755 "$WORK"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------- machine
SYS_BUSY=0
SYS_TOTAL=0
SYS_IRQ=0
sys_ticks() { # sets SYS_BUSY, SYS_IRQ, SYS_TOTAL: ticks over all CPUs (no fork)
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    SYS_IRQ=$((irq + softirq))
    SYS_BUSY=$((user + nice + system + irq + softirq + steal))
    SYS_TOTAL=$((SYS_BUSY + idle + iowait))
}
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)
echo "== swarmcast origin vs nginx benchmark"
echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:   nproc=$NCPU, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
sys_ticks; idle_b0=$SYS_BUSY; idle_t0=$SYS_TOTAL
sleep 1
sys_ticks
idle_busy=$(awk -v b=$((SYS_BUSY - idle_b0)) -v t=$((SYS_TOTAL - idle_t0)) -v n="$NCPU" 'BEGIN {printf "%.0f", (t > 0 ? 100 * n * b / t : 0)}')
echo "idle?:     ${idle_busy}% of ${NCPU}00% CPU busy over 1 s before the run (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
if ((idle_busy > 20)); then
    echo "WARNING:   the machine is not idle: other work competes with wrk and the servers (see other_cpu%)"
fi
echo "nginx:     $(nginx -v 2>&1 | sed 's/^nginx version: //') (package $(dpkg-query -W -f='${Package} ${Version}' nginx-light 2>/dev/null || echo '?'))"
echo "wrk:       $( (wrk -v 2>&1 || true) | head -1)"
echo "origin:    $ORIGIN_BIN ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- origin svc 2>/dev/null || echo ', origin/svc modified'))"
echo "load:      wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, $ROUNDS rounds, warm-up ${WARMUP}s"
echo

# ---------------------------------------------------------------- origin
SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
SWARMCAST_LOG=${SWARMCAST_LOG:-warn} "$ORIGIN_BIN" \
    --listen 127.0.0.1:0 --token-secret "$SECRET" \
    --window-segments 30 --playlist-segments 6 \
    >"$WORK/origin.out" 2>"$WORK/origin.err" &
ORIGIN_PID=$!
ORIGIN_ADDR=""
for _ in $(seq 100); do
    ORIGIN_ADDR=$(sed -n 's#^listening on http://\(.*\)$#\1#p' "$WORK/origin.out" | head -1)
    [[ -n $ORIGIN_ADDR ]] && break
    kill -0 "$ORIGIN_PID" 2>/dev/null || { cat "$WORK/origin.err" >&2; die "origin exited"; }
    sleep 0.1
done
[[ -n $ORIGIN_ADDR ]] || die "origin did not print its address"
ORIGIN="http://$ORIGIN_ADDR"
TOKEN=$("$ORIGIN_BIN" --token-secret "$SECRET" token --stream "$STREAM" --role ingest)

put() { # put URL FILE
    local code
    code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT \
        -H "Authorization: Bearer $TOKEN" --data-binary "@$2" "$1")
    [[ $code == 2?? ]] || die "PUT $1 -> HTTP $code"
}

playlist="$WORK/ingest.m3u8"
for i in $(seq 0 $((NSEG - 1))); do
    name=$(printf 'seg_%05d.ts' "$i")
    head -c "$SEG_BYTES" /dev/urandom >"$WORK/$name"
    put "$ORIGIN/ingest/$STREAM/$RENDITION/$name" "$WORK/$name"
    {
        printf '#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n'
        for j in $(seq 0 "$i"); do printf '#EXTINF:2.000,\nseg_%05d.ts\n' "$j"; done
    } >"$playlist"
    put "$ORIGIN/ingest/$STREAM/$RENDITION/index.m3u8" "$playlist"
done

check_get() { # check_get URL [SIZE] -> prints sha256
    local out code size
    out="$WORK/check.$$"
    code=$(curl -sS -o "$out" -w '%{http_code}' "$1")
    [[ $code == 200 ]] || die "GET $1 -> HTTP $code"
    size=$(stat -c %s "$out")
    if [[ -n ${2:-} && $size != "$2" ]]; then die "GET $1 -> $size bytes, want $2"; fi
    sha256sum "$out" | cut -d' ' -f1
    rm -f "$out"
}
for i in $(seq 0 $((NSEG - 1))); do
    check_get "$ORIGIN/live/$STREAM/$RENDITION/$i.ts" "$SEG_BYTES" >/dev/null
done
check_get "$ORIGIN/live/$STREAM/$RENDITION/index.m3u8" >/dev/null
for i in $(seq 0 $((NSEG - 1))); do rm -f "$WORK/$(printf 'seg_%05d.ts' "$i")"; done

# ---------------------------------------------------------------- nginx
ROOT="$WORK/www"
DOC="live/$STREAM/$RENDITION"
mkdir -p "$ROOT/$DOC" "$WORK/nginx-tmp"
curl -sS -o "$ROOT/$DOC/index.m3u8" "$ORIGIN/$DOC/index.m3u8"
curl -sS -o "$ROOT/$DOC/0.ts" "$ORIGIN/$DOC/0.ts"
chmod -R a+rX "$ROOT"
NGINX_PORT=$(free_port)
cat >"$WORK/nginx.conf" <<EOF
# Written by scripts/bench-origin.sh.
daemon off;
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    open_file_cache max=100;
    client_body_temp_path $WORK/nginx-tmp/body;
    proxy_temp_path $WORK/nginx-tmp/proxy;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
    scgi_temp_path $WORK/nginx-tmp/scgi;
    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $ROOT;
    }
}
EOF
nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/nginx.out" 2>&1 &
NGINX_PID=$!
NGINX="http://127.0.0.1:$NGINX_PORT"
for _ in $(seq 100); do
    curl -s -o /dev/null "$NGINX/" 2>/dev/null && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$WORK/nginx.out" "$WORK/nginx-error.log" >&2 2>/dev/null; die "nginx exited"; }
    sleep 0.1
done
NGINX_WORKERS=$(pgrep -P "$NGINX_PID" | tr '\n' ' ')
[[ -n $NGINX_WORKERS ]] || die "no nginx workers"

# Both servers must serve the same bytes.
for f in index.m3u8 0.ts; do
    want=""
    [[ $f == 0.ts ]] && want=$SEG_BYTES
    a=$(check_get "$ORIGIN/$DOC/$f" "$want")
    b=$(check_get "$NGINX/$DOC/$f" "$want")
    [[ $a == "$b" ]] || die "$f differs between the origin and nginx"
done
PL_BYTES=$(stat -c %s "$ROOT/$DOC/index.m3u8")
echo "origin:    $ORIGIN (pid $ORIGIN_PID, SWARMCAST_LOG=${SWARMCAST_LOG:-warn})"
echo "nginx:     $NGINX (master $NGINX_PID, workers $NGINX_WORKERS)"
echo "resources: segment /$DOC/0.ts ($SEG_BYTES bytes), playlist /$DOC/index.m3u8 ($PL_BYTES bytes), same bytes on both"
echo

# ---------------------------------------------------------------- CPU accounting
SRV_UTIME=0
SRV_STIME=0
server_ticks() { # server_ticks origin|nginx: sets SRV_UTIME, SRV_STIME (all processes, all threads)
    local p line rest pids
    SRV_UTIME=0
    SRV_STIME=0
    if [[ $1 == origin ]]; then pids=$ORIGIN_PID; else pids="$NGINX_PID $NGINX_WORKERS"; fi
    for p in $pids; do
        read -r line <"/proc/$p/stat" || continue
        rest=${line##*) }
        # shellcheck disable=SC2086
        set -- $rest
        SRV_UTIME=$((SRV_UTIME + ${12}))
        SRV_STIME=$((SRV_STIME + ${13}))
    done
}
children_ticks() { # cutime+cstime of this shell: waited-for children (wrk)
    local line rest
    read -r line </proc/$$/stat
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo $((${14} + ${15}))
}

to_ms() { # wrk duration (850.00us, 1.23ms, 1.02s, 2.00m) -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000;
        else if (u == "m") n *= 60000; else if (u == "h") n *= 3600000;
        printf "%.3f", n }'
}

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# run_wrk RESOURCE SERVER URL SECONDS ROUND (ROUND=warmup: not recorded)
run_wrk() {
    local resource=$1 server=$2 url=$3 secs=$4 round=$5
    local out="$WORK/wrk.out" u0 u1 s0 s1 c0 c1 b0 t0 q0 b1 t1 q1 w0 w1
    server_ticks "$server"; u0=$SRV_UTIME; s0=$SRV_STIME
    c0=$(children_ticks)
    sys_ticks; b0=$SYS_BUSY; t0=$SYS_TOTAL; q0=$SYS_IRQ
    w0=$EPOCHREALTIME
    wrk -t"$THREADS" -c"$CONNS" -d"${secs}s" --latency "$url" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || { cat "$out" >&2; die "wrk failed on $url"; }
    WRK_PID=""
    w1=$EPOCHREALTIME
    sys_ticks; b1=$SYS_BUSY; t1=$SYS_TOTAL; q1=$SYS_IRQ
    c1=$(children_ticks)
    server_ticks "$server"; u1=$SRV_UTIME; s1=$SRV_STIME
    [[ $round == warmup ]] && return 0
    local rps p99raw p99 nreq non2xx sockerr wall_s srv_cpu wrk_cpu busy irq other us_user us_sys
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p99raw=$(awk '$1 == "99%" {print $2}' "$out")
    [[ -n $rps && -n $p99raw ]] || { cat "$out" >&2; die "cannot parse wrk output"; }
    p99=$(to_ms "$p99raw")
    nreq=$(awk '/ requests in / {print $1}' "$out")
    # Server CPU per request, microseconds (user, system).
    us_user=$(awk -v d=$((u1 - u0)) -v hz="$CLK_TCK" -v n="$nreq" 'BEGIN {printf "%.1f", (n > 0 ? 1e6 * d / hz / n : 0)}')
    us_sys=$(awk -v d=$((s1 - s0)) -v hz="$CLK_TCK" -v n="$nreq" 'BEGIN {printf "%.1f", (n > 0 ? 1e6 * d / hz / n : 0)}')
    non2xx=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$out")
    sockerr=$(sed -n 's/^ *Socket errors: //p' "$out")
    wall_s=$(awk -v a="$w0" -v b="$w1" 'BEGIN {printf "%.3f", b - a}')
    # CPU in percent of one core (the machine has $NCPU cores: max $NCPU*100).
    srv_cpu=$(awk -v d=$((u1 + s1 - u0 - s0)) -v hz="$CLK_TCK" -v w="$wall_s" 'BEGIN {printf "%.0f", 100 * d / hz / w}')
    wrk_cpu=$(awk -v d=$((c1 - c0)) -v hz="$CLK_TCK" -v w="$wall_s" 'BEGIN {printf "%.0f", 100 * d / hz / w}')
    busy=$(awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v n="$NCPU" 'BEGIN {printf "%.0f", (t > 0 ? 100 * n * b / t : 0)}')
    # irq: time in hard/soft interrupts (most of it the loopback's TCP
    # receive path). With tick-based accounting it is also charged to the
    # process that was running (server or wrk), so it is a part of those
    # figures, not an addition; "other" is what neither server nor wrk used.
    irq=$(awk -v q=$((q1 - q0)) -v t=$((t1 - t0)) -v n="$NCPU" 'BEGIN {printf "%.0f", (t > 0 ? 100 * n * q / t : 0)}')
    other=$((busy - srv_cpu - wrk_cpu))
    ((other < 0)) && other=0
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$resource" "$server" "$round" "$rps" "$p99" "$srv_cpu" "$wrk_cpu" "$busy" "$other" \
        "${non2xx:-0}" "$irq" "$us_user" "$us_sys" >>"$RESULTS"
    printf '  round %s  %-8s %-6s %10.1f req/s  p99 %8.3f ms  cpu: server %3s%% (%s us user + %s us sys per req)  wrk %3s%%  irq %3s%%  other %3s%%  (busy %3s%% of %s00%%)%s%s\n' \
        "$round" "$resource" "$server" "$rps" "$p99" "$srv_cpu" "$us_user" "$us_sys" "$wrk_cpu" "$irq" "$other" "$busy" "$NCPU" \
        "$([[ -n $non2xx ]] && echo "  NON-2xx: $non2xx")" \
        "$([[ -n $sockerr ]] && echo "  socket errors: $sockerr")"
    if [[ -n $non2xx ]]; then log "WARNING: $server answered $non2xx non-2xx responses for $resource"; fi
}

url_of() { # url_of SERVER RESOURCE
    local base
    if [[ $1 == origin ]]; then base=$ORIGIN; else base=$NGINX; fi
    if [[ $2 == segment ]]; then echo "$base/$DOC/0.ts"; else echo "$base/$DOC/index.m3u8"; fi
}

# ---------------------------------------------------------------- runs
for resource in segment playlist; do
    echo "-- $resource"
    if ((WARMUP > 0)); then
        for server in nginx origin; do
            run_wrk "$resource" "$server" "$(url_of "$server" "$resource")" "$WARMUP" warmup
        done
    fi
    for round in $(seq 1 "$ROUNDS"); do
        # Alternate which server goes first, so drift in the machine's load
        # does not always favour the same one.
        if ((round % 2)); then order="nginx origin"; else order="origin nginx"; fi
        for server in $order; do
            run_wrk "$resource" "$server" "$(url_of "$server" "$resource")" "$DURATION" "$round"
        done
    done
done
echo

# ---------------------------------------------------------------- summary
median() { # median of column COL for RESOURCE SERVER
    awk -F'\t' -v r="$1" -v s="$2" -v c="$3" '$1 == r && $2 == s {print $c}' "$RESULTS" |
        sort -g | awk '{a[NR] = $1} END {
            if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2];
            else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
rounds_of() { # the per-round values of column COL
    awk -F'\t' -v r="$1" -v s="$2" -v c="$3" '$1 == r && $2 == s {printf "%s%s", sep, $c; sep = " "}' "$RESULTS"
}

echo "== summary (medians of $ROUNDS rounds; cpu in % of one core, $NCPU cores)"
printf '%-9s %-7s %14s %15s %9s %12s %8s %8s %10s   %s\n' resource server 'req/s(median)' 'p99_ms(median)' srv_cpu% 'srv_us/req' wrk_cpu% irq_cpu% other_cpu% 'req/s per round | p99_ms per round'
for resource in segment playlist; do
    for server in nginx origin; do
        printf '%-9s %-7s %14.1f %15.3f %9s %12s %8s %8s %10s   %s | %s\n' "$resource" "$server" \
            "$(median "$resource" "$server" 4)" "$(median "$resource" "$server" 5)" \
            "$(median "$resource" "$server" 6)" \
            "$(median "$resource" "$server" 12)u+$(median "$resource" "$server" 13)s" \
            "$(median "$resource" "$server" 7)" \
            "$(median "$resource" "$server" 11)" "$(median "$resource" "$server" 9)" \
            "$(rounds_of "$resource" "$server" 4)" "$(rounds_of "$resource" "$server" 5)"
    done
done
echo
met=yes
for resource in segment playlist; do
    rr=$(awk -v o="$(median "$resource" origin 4)" -v n="$(median "$resource" nginx 4)" 'BEGIN {printf "%.2f", o / n}')
    pr=$(awk -v o="$(median "$resource" origin 5)" -v n="$(median "$resource" nginx 5)" 'BEGIN {printf "%.2f", o / n}')
    echo "ratio $resource req/s origin/nginx = $rr   (target >= 1.00)"
    echo "ratio $resource p99   origin/nginx = $pr   (target <= 1.00)"
    awk -v x="$rr" 'BEGIN {exit !(x >= 1.0)}' || met=no
    awk -v x="$pr" 'BEGIN {exit !(x <= 1.0)}' || met=no
done
echo "target met: $met"
noisy=$(awk -F'\t' '$9 > 20' "$RESULTS" | wc -l)
total=$(wc -l <"$RESULTS")
if ((noisy > 0)); then
    echo "WARNING: in $noisy of $total runs other processes used more than 20% of a core (other_cpu%): the figures are noisy; rerun on an idle machine"
fi
echo "loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ -n ${RESULTS_OUT:-} ]]; then
    cp "$RESULTS" "$RESULTS_OUT"
    echo "per-round figures (tsv: resource server round req/s p99_ms srv_cpu wrk_cpu busy other non2xx irq srv_us_user srv_us_sys): $RESULTS_OUT"
fi
