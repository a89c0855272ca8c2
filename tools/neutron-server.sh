#!/usr/bin/env bash
# A real neutron-server (PyPI neutron, default 29.0.0) on this host, for the
# fullstack suite that puts agentkit's agents under it (tests/fullstack/) and
# for the demo (tools/demo.sh, with a state directory and vhost of its own).
# As root:
#
#   tools/neutron-server.sh [start]   start (or confirm) the server; prints
#                                      api_url=, transport_url=, state_dir=,
#                                      started=1 (0: it was already running)
#   tools/neutron-server.sh status    exit 0 when running (prints the same)
#   tools/neutron-server.sh stop      stop it; the database is kept, so the
#                                      next start skips the schema migration
#   tools/neutron-server.sh stop-neutron  stop only the neutron processes (API,
#                                      RPC, periodic), as a crash or an upgrade
#                                      takes the server away: MariaDB, the
#                                      vhost (the agents' queues) and the
#                                      ports stay, and the next start brings
#                                      back just those processes
#   tools/neutron-server.sh purge     stop it and remove its state directory
#
# What runs (Neutron 29 has no neutron-server binary, see
# /work/shared/neutron-reference.md): a private MariaDB (own datadir, port
# and socket: mariadbd --no-defaults), the REST API as the WSGI app
# neutron.wsgi.api:application under uWSGI (pyuwsgi, --http-socket; it
# closes the connection after every response), neutron-rpc-server (the
# agents' RPC) and neutron-periodic-workers (agent status checks and
# rescheduling; AGENTKIT_NEUTRON_PERIODIC=0 leaves it out). ML2 with type
# drivers flat, vlan, vxlan (tenant type vxlan), mechanism drivers
# openvswitch and agentkit_linuxbridge (drivers/ml2/linuxbridge.py, installed
# in the neutron venv by tools/neutron-venv.sh), service plugin router,
# auth_strategy noauth (requests carry project_id in their bodies).
# RabbitMQ: the agentkit user on a vhost of its own, deleted again by stop.
#
# Idempotent: a running server is reused (a lock serialises concurrent
# callers), the venv, packages and schema are only set up when missing.
# Exit codes: 0 ok; 75 MariaDB cannot be installed; 76 the neutron venv
# cannot be built; anything else is a real failure (logs: <state>/log/).
#
# Environment: AGENTKIT_NEUTRON_STATE (state dir, default
# /var/tmp/akns-neutron-server), AGENTKIT_NEUTRON_VHOST (default
# akns-neutron), AGENTKIT_RABBIT_USER/PASSWORD (agentkit/agentkit),
# AGENTKIT_NEUTRON_PERIODIC (1), AGENTKIT_NEUTRON_PHYSNET (the flat/vlan
# physical network, aknsext), plus what tools/neutron-venv.sh reads.
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${AGENTKIT_NEUTRON_STATE:-/var/tmp/akns-neutron-server}
VHOST=${AGENTKIT_NEUTRON_VHOST:-akns-neutron}
RUSER=${AGENTKIT_RABBIT_USER:-agentkit}
RPASS=${AGENTKIT_RABBIT_PASSWORD:-agentkit}
PERIODIC=${AGENTKIT_NEUTRON_PERIODIC:-1}
PHYSNET=${AGENTKIT_NEUTRON_PHYSNET:-aknsext}
LOG=$STATE/log
T0=$(date +%s%N)

say() { local now; now=$(date +%s%N); printf "[neutron-server %6.1fs] %s\n" "$(( (now - T0) / 1000000 ))e-3" "$*" >&2; }
die() { local rc=$1; shift; echo "neutron-server.sh: $*" >&2; exit "$rc"; }

pid_of() {  # service -> pid, if its process is alive and ours
    local f=$STATE/run/$1.pid pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    # A stale pid file (e.g. after a reboot) may name someone else's process:
    # ours carry the state dir in their command line or environment.
    grep -qaF "$STATE" "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null || return 1
    echo "$pid"
}

spawn() {  # service, command...: a session of its own, output to its log
    local name=$1; shift
    # Not interactive: no job control, so the background job is not a
    # process group leader and setsid runs in place: $! is the daemon's pid.
    setsid "$@" >>"$LOG/$name.log" 2>&1 </dev/null 9>&- &
    echo $! >"$STATE/run/$name.pid"
}

stop_services() {  # service...: SIGTERM all at once, SIGKILL after 15 s
    local name pid alive pids=()
    for name in "$@"; do
        if pid=$(pid_of "$name"); then
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for _ in $(seq 1 150); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && say "pid $pid did not stop on SIGTERM in 15 s: SIGKILL"
        # Also workers left behind in the group (uWSGI, cotyledon children).
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    for name in "$@"; do rm -f "$STATE/run/$name.pid"; done
}

wait_for() {  # seconds, description, command...
    local timeout=$1 what=$2; shift 2
    local deadline
    deadline=$(( $(date +%s) + timeout ))
    until "$@" >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            echo "neutron-server.sh: timed out after ${timeout}s waiting for $what" >&2
            for f in "$LOG"/*.log; do
                echo "--- tail of $f" >&2; tail -n 25 "$f" >&2 || true
            done
            exit 1
        fi
        sleep 0.3
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

transport_url() { echo "rabbit://$RUSER:$RPASS@127.0.0.1:5672/$VHOST"; }

api_ok() {  # the API answers its version document
    python3 - "$API_URL" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + '/', timeout=5) as r:
    sys.exit(0 if r.status in (200, 300) else 1)
EOF
}

print_endpoints() {
    echo "api_url=$API_URL"
    echo "transport_url=$(transport_url)"
    echo "state_dir=$STATE"
    echo "started=$1"
}

load_ports() {
    # shellcheck disable=SC1091
    [ -f "$STATE/ports.env" ] && . "$STATE/ports.env"
    API_URL="http://127.0.0.1:${API_PORT:-0}"
}

running() { pid_of mariadb >/dev/null && pid_of rpc >/dev/null && pid_of api >/dev/null; }

stop_all() {
    # The database last: the neutron processes may still write to it.
    stop_services periodic rpc api
    stop_services mariadb
    rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
}

# ---------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die 1 "must run as root"
mkdir -p "$STATE/run" "$LOG"
exec 9>"$STATE/run/lock"
flock 9
cmd=${1:-start}

case "$cmd" in
stop)
    stop_all; rm -f "$STATE/run/neutron-stopped"; say "stopped"; exit 0 ;;
stop-neutron)
    stop_services periodic rpc api; touch "$STATE/run/neutron-stopped"
    say "neutron processes stopped (MariaDB and the vhost kept)"; exit 0 ;;
purge)
    stop_all; flock -u 9; rm -rf "$STATE"; say "purged"; exit 0 ;;
status)
    load_ports
    if running && api_ok; then print_endpoints 0; exit 0; fi
    echo "not running" >&2; exit 3 ;;
start) ;;
*) die 2 "usage: $0 [start|stop|status|purge]" ;;
esac

load_ports
if running && api_ok; then
    say "already running"
    print_endpoints 0
    exit 0
fi
# After stop-neutron only the neutron processes come back, on the same
# ports and vhost; half-started or crashed: start over (the database and
# schema stay).
RESUME=0
if [ -f "$STATE/run/neutron-stopped" ] && pid_of mariadb >/dev/null; then
    RESUME=1
    stop_services periodic rpc api
else
    stop_all
fi
rm -f "$STATE/run/neutron-stopped"

# -- packages ----------------------------------------------------------------
if ! command -v mariadbd >/dev/null || ! command -v mariadb-install-db >/dev/null; then
    say "installing mariadb-server"
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends mariadb-server; } >"$LOG/apt.log" 2>&1; then
        tail -n 20 "$LOG/apt.log" >&2
        die 75 "cannot install mariadb-server (see $LOG/apt.log)"
    fi
fi
VENV=$(bash tools/neutron-venv.sh 2>"$LOG/venv.log") || {
    tail -n 20 "$LOG/venv.log" >&2; die 76 "cannot build the neutron venv (see $LOG/venv.log)"; }
VENV=$(cd "$VENV" && pwd)
if ! "$VENV/bin/python" -c 'import pymysql, pyuwsgi' 2>/dev/null; then
    say "installing PyMySQL and pyuwsgi into $VENV"
    "$VENV/bin/pip" install -q PyMySQL pyuwsgi >"$LOG/pip.log" 2>&1 || {
        tail -n 20 "$LOG/pip.log" >&2; die 76 "cannot install PyMySQL/pyuwsgi into $VENV"; }
fi
say "packages ready (venv $VENV)"

# -- ports ---------------------------------------------------------------------
port_busy() { python3 -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"; }
if [ "$RESUME" = 0 ]; then
    if [ -z "${DB_PORT:-}" ] || port_busy "$DB_PORT"; then DB_PORT=$(free_port); fi
    if [ -z "${API_PORT:-}" ] || port_busy "$API_PORT" || [ "$API_PORT" = "$DB_PORT" ]; then
        API_PORT=$(free_port)
    fi
    printf 'DB_PORT=%s\nAPI_PORT=%s\n' "$DB_PORT" "$API_PORT" >"$STATE/ports.env"
fi
API_URL="http://127.0.0.1:$API_PORT"

# -- MariaDB -------------------------------------------------------------------
DATADIR=$STATE/mysql
SOCK=$STATE/run/mysqld.sock
if [ "$RESUME" = 1 ]; then
    say "MariaDB kept on 127.0.0.1:$DB_PORT, vhost $VHOST kept"
else
if [ ! -d "$DATADIR/mysql" ]; then
    say "initialising MariaDB datadir"
    rm -rf "$DATADIR" "$STATE/db-schema-"*
    mariadb-install-db --no-defaults --basedir=/usr --datadir="$DATADIR" --user=root \
        --auth-root-authentication-method=normal --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || {
        tail -n 20 "$LOG/mariadb-install.log" >&2; die 1 "mariadb-install-db failed"; }
fi
spawn mariadb mariadbd --no-defaults --user=root --basedir=/usr --datadir="$DATADIR" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --socket="$SOCK" \
    --pid-file="$STATE/run/mysqld.pid" --skip-name-resolve --skip-log-bin \
    --innodb-buffer-pool-size=128M --innodb-flush-log-at-trx-commit=0 \
    --innodb-doublewrite=0 --max-connections=500 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
wait_for 60 "MariaDB" mariadb --no-defaults --socket="$SOCK" -uroot -e 'SELECT 1'
mariadb --no-defaults --socket="$SOCK" -uroot <<'EOF'
CREATE DATABASE IF NOT EXISTS neutron CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'neutron'@'127.0.0.1' IDENTIFIED BY 'neutron';
GRANT ALL PRIVILEGES ON neutron.* TO 'neutron'@'127.0.0.1';
EOF
say "MariaDB up on 127.0.0.1:$DB_PORT"

# -- RabbitMQ vhost (fresh: no queues of agents from an earlier run) ------------
rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
rabbitmqctl -q add_vhost "$VHOST" >/dev/null
rabbitmqctl -q set_permissions -p "$VHOST" "$RUSER" '.*' '.*' '.*' >/dev/null
say "RabbitMQ vhost $VHOST ready"
fi  # RESUME

# -- configuration -------------------------------------------------------------
mkdir -p "$STATE/state" "$STATE/lock"
cp "$VENV/etc/neutron/api-paste.ini" "$STATE/api-paste.ini"
cat >"$STATE/neutron.conf" <<EOF
# Written by tools/neutron-server.sh; rewritten on every start.
[DEFAULT]
core_plugin = ml2
service_plugins = router
auth_strategy = noauth
transport_url = $(transport_url)
host = akns-server
state_path = $STATE/state
rpc_workers = 1
rpc_state_report_workers = 1
dhcp_agents_per_network = 1
agent_down_time = 30
allow_overlapping_ips = true
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
debug = false

[database]
connection = mysql+pymysql://neutron:neutron@127.0.0.1:$DB_PORT/neutron?charset=utf8mb4
max_pool_size = 10

[oslo_concurrency]
lock_path = $STATE/lock

[agent]
root_helper = env
EOF
cat >"$STATE/ml2_conf.ini" <<EOF
# Written by tools/neutron-server.sh; rewritten on every start.
[ml2]
type_drivers = flat,vlan,vxlan
project_network_types = vxlan
mechanism_drivers = openvswitch,agentkit_linuxbridge
extension_drivers = port_security

[ml2_type_flat]
flat_networks = $PHYSNET

[ml2_type_vlan]
network_vlan_ranges = $PHYSNET:100:199

[ml2_type_vxlan]
vni_ranges = 1001:2000

[securitygroup]
enable_security_group = true
firewall_driver = openvswitch
EOF
CONF_ARGS=(--config-file "$STATE/neutron.conf" --config-file "$STATE/ml2_conf.ini")

# -- schema --------------------------------------------------------------------
VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("neutron"))')
if [ ! -f "$STATE/db-schema-$VERSION" ]; then
    say "neutron-db-manage upgrade heads (neutron $VERSION)"
    "$VENV/bin/neutron-db-manage" "${CONF_ARGS[@]}" upgrade heads >"$LOG/db-manage.log" 2>&1 || {
        tail -n 30 "$LOG/db-manage.log" >&2; die 1 "neutron-db-manage upgrade heads failed"; }
    rm -f "$STATE/db-schema-"*
    touch "$STATE/db-schema-$VERSION"
    say "schema migrated"
fi

# -- neutron processes ---------------------------------------------------------
export PATH="$VENV/bin:$PATH"
spawn rpc "$VENV/bin/neutron-rpc-server" "${CONF_ARGS[@]}"
if [ "$PERIODIC" = 1 ]; then
    spawn periodic "$VENV/bin/neutron-periodic-workers" "${CONF_ARGS[@]}"
fi
# uWSGI's argv is not neutron's: the app finds its files through the env.
OS_NEUTRON_CONFIG_DIR=$STATE OS_NEUTRON_CONFIG_FILES="neutron.conf;ml2_conf.ini" \
spawn api "$VENV/bin/uwsgi" --http-socket "127.0.0.1:$API_PORT" \
    --module neutron.wsgi.api:application --master --processes 1 --threads 4 \
    --enable-threads --lazy-apps --need-app --die-on-term --buffer-size 65535 \
    --hook-master-start "unix_signal:15 gracefully_kill_them_all" \
    --procname-prefix-spaced akns-neutron-api --disable-logging
wait_for 120 "the API at $API_URL" api_ok
say "API up at $API_URL"

rpc_consumed() {  # the RPC server consumes the topics agents call
    local q
    q=$(rabbitmqctl -q list_queues -p "$VHOST" name consumers 2>/dev/null) || return 1
    echo "$q" | awk '$1 == "q-plugin" && $2 > 0 {a=1} $1 == "q-reports-plugin" && $2 > 0 {b=1} END {exit !(a && b)}'
}
wait_for 120 "neutron-rpc-server consuming q-plugin and q-reports-plugin" rpc_consumed
for s in rpc api mariadb; do
    pid_of "$s" >/dev/null || { tail -n 30 "$LOG/$s.log" >&2; die 1 "$s exited"; }
done
if [ "$PERIODIC" = 1 ] && ! pid_of periodic >/dev/null; then
    tail -n 30 "$LOG/periodic.log" >&2; die 1 "neutron-periodic-workers exited"
fi
say "neutron-server ready"
print_endpoints 1
