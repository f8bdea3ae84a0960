#!/usr/bin/env bash
# Load benchmark: vipgate vs HAProxy 2.6 (plain and forced splice) vs direct, on loopback.
#
#   benches/load/run.sh            # full run: medians of 3, 1 GiB file, 10 s wrk runs, 9,800 idle conns
#   benches/load/run.sh --quick    # 1 run each, 256 MiB file, 3 s wrk runs, 2,000 idle conns
#
# Not part of `cargo test`. Needs root for apt-get (only when haproxy/nginx/wrk are missing).
# Everything listens on 127.0.0.1 (ports 18080-18122, checked free first); every process started
# here is killed by PID on exit. Results: target/load-bench/results.json and a table on stdout.
set -euo pipefail

QUICK=0
for a in "$@"; do
    case "$a" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 2 ;;
    esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT_DIR="$ROOT/target/load-bench"
mkdir -p "$OUT_DIR"

# Ports (fixed, high, loopback only).
P_NGINX=18080
P_VG_TCP=18101; P_VG_HTTP=18102
P_HA_TCP=18111; P_HA_HTTP=18112
P_HS_TCP=18121; P_HS_HTTP=18122

log() { printf '[load-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- tools ---------------------------------------------------------------------------------
missing=()
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v ss >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
HAPROXY="$(command -v haproxy)"

# --- build ---------------------------------------------------------------------------------
log "cargo build --release"
(cd "$ROOT" && cargo build --release --locked -q)
VIPGATE="$ROOT/target/release/vipgate"

# --- limits, cpus, ports -------------------------------------------------------------------
# The proxies inherit this; 9,800 idle connections need ~19,600 descriptors in the proxy.
hard="$(ulimit -Hn)"
want=65536
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then want="$hard"; fi
ulimit -n "$want" 2>/dev/null || true
NOFILE="$(ulimit -n)"
NCPU="$(nproc)"
if [ "$NCPU" -ge 2 ]; then CPU_PROXY=0; CPU_LOAD=1; else CPU_PROXY=0; CPU_LOAD=0; log "only one CPU: proxy and load share it"; fi

for p in $P_NGINX $P_VG_TCP $P_VG_HTTP $P_HA_TCP $P_HA_HTTP $P_HS_TCP $P_HS_HTTP; do
    if ss -Htln "sport = :$p" | grep -q .; then echo "port $p is in use on this machine; stop what holds it" >&2; exit 1; fi
done

TMP="$(mktemp -d /tmp/vipgate-load.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    set +e   # a failing kill must not end the cleanup
    trap - EXIT INT TERM
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] || continue
        # the load generators (wrk, curl) are children of bench.py: stop them by parent PID
        if [ "$pid" = "${PID_BENCH:-}" ]; then pkill -TERM -P "$pid" 2>/dev/null; fi
        kill -TERM "$pid" 2>/dev/null
    done
    sleep 0.5
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT INT TERM

wait_port() { # port timeout_s
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1 after $2 s" >&2
    return 1
}

# --- backend: nginx, one worker ------------------------------------------------------------
if [ "$QUICK" = 1 ]; then BIG_SIZE=256M; else BIG_SIZE=1G; fi
mkdir -p "$TMP/www" "$TMP/nginx-tmp"
head -c 1024 /dev/urandom >"$TMP/www/1k"
truncate -s "$BIG_SIZE" "$TMP/www/big"   # sparse: served from page cache of zero pages
cat >"$TMP/nginx.conf" <<EOF
user root;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log warn;
events { worker_connections $NOFILE; multi_accept on; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_header_timeout 120s;
    client_body_temp_path $TMP/nginx-tmp/body;
    proxy_temp_path $TMP/nginx-tmp/proxy;
    fastcgi_temp_path $TMP/nginx-tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx-tmp/uwsgi;
    scgi_temp_path $TMP/nginx-tmp/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        root $TMP/www;
    }
}
EOF
log "starting nginx (1 worker, cpu $CPU_LOAD)"
taskset -c "$CPU_LOAD" "$NGINX" -c "$TMP/nginx.conf" -p "$TMP" -g 'daemon off;' 2>"$TMP/nginx.stderr" &
PIDS+=($!)
wait_port $P_NGINX 10

# --- vipgate -------------------------------------------------------------------------------
cat >"$TMP/vipgate.toml" <<EOF
[global]
workers = 1

[services.tcp]
bind = "127.0.0.1:$P_VG_TCP"
mode = "tcp"
[[services.tcp.servers]]
name = "nginx"
address = "127.0.0.1:$P_NGINX"

[services.http]
bind = "127.0.0.1:$P_VG_HTTP"
mode = "http"
[[services.http.servers]]
name = "nginx"
address = "127.0.0.1:$P_NGINX"
EOF
"$VIPGATE" check --config "$TMP/vipgate.toml"
# One log line per connection/request at info; HAProxy below logs nothing, so vipgate runs
# at warn by default to compare the same work. VIPGATE_BENCH_LOG=info to include logging.
log "starting vipgate (VIPGATE_WORKERS=1, cpu $CPU_PROXY)"
VIPGATE_WORKERS=1 VIPGATE_LOG="${VIPGATE_BENCH_LOG:-warn}" \
    taskset -c "$CPU_PROXY" "$VIPGATE" run --config "$TMP/vipgate.toml" 2>"$TMP/vipgate.stderr" &
PID_VG=$!; PIDS+=($PID_VG)

# --- HAProxy: plain and with forced splice -------------------------------------------------
# HAProxy refuses to start unless 2*maxconn + 2*maxpipes (+ a few) fit under the FD limit.
# Two descriptors per proxied connection; the rest of the budget goes to splice pipes
# (HAProxy's default maxpipes = maxconn/4 does not fit under a 20,000 hard limit).
HA_MAXCONN=$(( (NOFILE - 300) / 2 ))
HA_MAXPIPES=$(( (NOFILE - 2 * HA_MAXCONN - 100) / 2 ))
[ "$HA_MAXPIPES" -gt 16384 ] && HA_MAXPIPES=16384
haproxy_cfg() { # file tcp_port http_port extra_defaults_lines extra_global_lines
    cat >"$1" <<EOF
global
    nbthread 1
${5:-}
    maxconn $HA_MAXCONN
    pidfile $1.pid

defaults
    timeout connect 5s
    timeout client 1m
    timeout server 1m
    maxconn $HA_MAXCONN
$4

listen tcp
    mode tcp
    bind 127.0.0.1:$2
    server nginx 127.0.0.1:$P_NGINX

listen http
    mode http
    bind 127.0.0.1:$3
    server nginx 127.0.0.1:$P_NGINX
EOF
    "$HAPROXY" -c -q -f "$1"
}
haproxy_cfg "$TMP/haproxy.cfg" $P_HA_TCP $P_HA_HTTP ""
haproxy_cfg "$TMP/haproxy-splice.cfg" $P_HS_TCP $P_HS_HTTP "    option splice-request
    option splice-response" "    maxpipes $HA_MAXPIPES"
log "starting haproxy and haproxy-splice (nbthread 1, cpu $CPU_PROXY)"
taskset -c "$CPU_PROXY" "$HAPROXY" -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PID_HA=$!; PIDS+=($PID_HA)
taskset -c "$CPU_PROXY" "$HAPROXY" -db -f "$TMP/haproxy-splice.cfg" >"$TMP/haproxy-splice.log" 2>&1 &
PID_HS=$!; PIDS+=($PID_HS)

for p in $P_VG_TCP $P_VG_HTTP $P_HA_TCP $P_HA_HTTP $P_HS_TCP $P_HS_HTTP; do wait_port "$p" 15; done
for p in $P_NGINX $P_VG_HTTP $P_HA_HTTP $P_HS_HTTP; do
    curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$p/1k" || { echo "GET /1k via port $p failed" >&2; exit 1; }
done
log "all up; running scenarios"

TARGETS=$(cat <<EOF
[
 {"name": "vipgate",        "pid": $PID_VG, "tcp": $P_VG_TCP, "http": $P_VG_HTTP},
 {"name": "haproxy",        "pid": $PID_HA, "tcp": $P_HA_TCP, "http": $P_HA_HTTP},
 {"name": "haproxy-splice", "pid": $PID_HS, "tcp": $P_HS_TCP, "http": $P_HS_HTTP},
 {"name": "direct",         "pid": null,    "tcp": $P_NGINX,  "http": $P_NGINX}
]
EOF
)
QARG=(); [ "$QUICK" = 1 ] && QARG=(--quick)
start=$SECONDS
# In the background + wait, so that a signal runs the trap at once (bash defers traps while a
# foreground child runs).
taskset -c "$CPU_LOAD" python3 "$HERE/bench.py" "${QARG[@]}" \
    --targets "$TARGETS" --cpu-load "$CPU_LOAD" --big-size "$BIG_SIZE" \
    --haproxy "$HAPROXY" --vipgate "$VIPGATE" --out "$OUT_DIR/results.json" \
    --only "${BENCH_ONLY:-S1,S2,S3,S4}" &
PID_BENCH=$!; PIDS=("$PID_BENCH" "${PIDS[@]}")
wait "$PID_BENCH"
log "scenarios took $((SECONDS - start)) s"
for p in "$PID_VG" "$PID_HA" "$PID_HS"; do
    kill -0 "$p" 2>/dev/null || { echo "proxy pid $p died during the run; see logs" >&2; exit 1; }
done
