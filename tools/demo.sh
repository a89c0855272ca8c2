#!/usr/bin/env bash
# The main job: on a fresh Debian 12 machine (as root) show agentkit doing
# what Neutron's agents do, under the real neutron-server.
#
#   tools/demo.sh [up]   install what is needed (Debian packages, OVS, RabbitMQ,
#                        MariaDB, agentkit's venv, neutron 29 from PyPI in its own
#                        venv), start neutron-server and agentkit's four agents,
#                        and run the seed scenario through the REST API: a tenant
#                        network with DHCP, two VMs (leases, pings), a router with
#                        SNAT and a floating IP, metadata; each step printed with
#                        what it built on the host. Everything keeps running.
#   tools/demo.sh status  what runs, and where the logs are
#   tools/demo.sh down    delete the scenario through the API, stop the agents,
#                         the stand-in Nova and neutron-server, remove the bridges
#
# Idempotent: a second `up` reuses the running server, agents and resources.
# Everything lives under $AGENTKIT_DEMO_ROOT (default /var/lib/agentkit-demo):
# configuration (etc/), logs (log/), agent state, the server's database. The
# server is the one tools/neutron-server.sh runs, with a state directory and a
# RabbitMQ vhost of its own (so the test suite never shares it). To run the
# agents under an existing server instead: tools/run-agents.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
#
# Environment (for tests and special set-ups): AGENTKIT_DEMO_ROOT,
# AGENTKIT_DEMO_HOST (the agents' host name), AGENTKIT_DEMO_PROJECT,
# AGENTKIT_DEMO_BRIDGES ("br-int br-tun br-ex"), and tools/neutron-server.sh's
# AGENTKIT_NEUTRON_STATE / _VHOST / _PHYSNET: a server whose state directory
# is not under the demo's root is used as it is and left running by `down`.
ROOT=${AGENTKIT_DEMO_ROOT:-/var/lib/agentkit-demo}
HOST=${AGENTKIT_DEMO_HOST:-$(hostname -s)-demo}
PROJECT=${AGENTKIT_DEMO_PROJECT:-demo}
read -r BR_INT BR_TUN BR_EX <<<"${AGENTKIT_DEMO_BRIDGES:-br-int br-tun br-ex}"
AGENTS=(l2 dhcp l3 metadata)
export AGENTKIT_NEUTRON_STATE=${AGENTKIT_NEUTRON_STATE:-$ROOT/neutron-server}
export AGENTKIT_NEUTRON_VHOST=${AGENTKIT_NEUTRON_VHOST:-agentkit-demo}
export AGENTKIT_NEUTRON_PHYSNET=${AGENTKIT_NEUTRON_PHYSNET:-physnet1}
PHYSNET=$AGENTKIT_NEUTRON_PHYSNET

# The demo's own Python (not the agents) need not show library deprecations.
demo_py() { PYTHONWARNINGS=ignore "$VENV/bin/python" tools/demo.py "$@"; }
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "tools/demo.sh: run as root (it builds namespaces, bridges, iptables)" >&2; exit 1; }

alive() {  # name -> pid of a live process started by this script
    local f=$ROOT/run/$1.pid pid
    [ -f "$f" ] && pid=$(cat "$f") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
        && grep -qaF "$ROOT" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

start() {  # name, command...: in its own session, output to log/<name>.out
    local name=$1; shift
    if pid=$(alive "$name"); then echo "    $name already running (pid $pid)"; return; fi
    setsid "$@" >>"$ROOT/log/$name.out" 2>&1 </dev/null &
    echo $! >"$ROOT/run/$name.pid"
    echo "    started $name (pid $!)"
}

stop() {  # name...
    local name pid
    for name in "$@"; do
        if pid=$(alive "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
            echo "    stopped $name (pid $pid)"
        fi
        rm -f "$ROOT/run/$name.pid"
    done
}

server_endpoints() {  # sets API_URL and TRANSPORT_URL from neutron-server.sh's output
    local out=$1
    API_URL=$(sed -n 's/^api_url=//p' <<<"$out")
    TRANSPORT_URL=$(sed -n 's/^transport_url=//p' <<<"$out")
}

write_config() {  # the demo's overrides of etc/agentkit/*.ini (passed last)
    local secret
    [ -f "$ROOT/etc/metadata-secret" ] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$ROOT/etc/metadata-secret"
    secret=$(cat "$ROOT/etc/metadata-secret")
    cat >"$ROOT/etc/demo.ini" <<EOF
# Written by tools/demo.sh: what differs from etc/agentkit/*.ini on this host.
[DEFAULT]
transport_url = $TRANSPORT_URL
host = $HOST
state_path = $ROOT/state
metadata_proxy_socket = $ROOT/state/metadata_proxy
nova_metadata_host = 127.0.0.1
nova_metadata_port = $NOVA_PORT
metadata_proxy_shared_secret = $secret
enable_isolated_metadata = true

[agent]
report_interval = 10
root_helper = sudo

[ovs]
integration_bridge = $BR_INT
tunnel_bridge = $BR_TUN
datapath_type = netdev

[l2]
mechanism_driver = openvswitch
tunnel_types = vxlan
local_ip = 127.0.0.1
bridge_mappings = $PHYSNET:$BR_EX

[securitygroup]
firewall_driver = iptables_hybrid

[oslo_reports]
# kill -USR2 <agent pid> writes a report here (benchmarks/time_split.py reads it)
log_dir = $ROOT/gmr
EOF
}

up() {
    mkdir -p "$ROOT/etc" "$ROOT/log" "$ROOT/run" "$ROOT/state" "$ROOT/gmr"
    chmod 755 "$ROOT" "$ROOT/state"  # dnsmasq and haproxy read their files as nobody
    say "installing and starting system services (Debian packages, Open vSwitch, RabbitMQ)"
    bash tools/install-deps.sh 2>&1 | sed 's/^/    /'
    VENV=$(bash tools/venv.sh)
    say "neutron-server 29 (PyPI neutron in .venv-neutron, MariaDB, RabbitMQ vhost $AGENTKIT_NEUTRON_VHOST)"
    local out
    out=$(bash tools/neutron-server.sh start 2> >(sed 's/^/    /' >&2))
    server_endpoints "$out"
    echo "    API $API_URL"
    NOVA_PORT=$(cat "$ROOT/etc/nova-port" 2>/dev/null || python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    echo "$NOVA_PORT" >"$ROOT/etc/nova-port"
    write_config
    say "a stand-in for Nova's metadata API (checks the proxy's signature) on 127.0.0.1:$NOVA_PORT"
    start nova env PYTHONWARNINGS=ignore "$VENV/bin/python" tools/demo.py nova --port "$NOVA_PORT" \
        --secret "$(cat "$ROOT/etc/metadata-secret")" --instances "$ROOT/etc/instances.json"
    say "the provider bridge $BR_EX (on a real host: the one holding the uplink NIC)"
    ovs-vsctl --may-exist add-br "$BR_EX" -- set Bridge "$BR_EX" datapath_type=netdev
    say "agentkit's agents (host $HOST; config: etc/agentkit/*.ini + $ROOT/etc/demo.ini)"
    local a
    for a in "${AGENTS[@]}"; do
        start "$a" "$VENV/bin/agentkit-$a" --config-file etc/agentkit/agentkit.ini \
            --config-file "etc/agentkit/${a}_agent.ini" --config-file "$ROOT/etc/demo.ini" \
            --log-file "$ROOT/log/$a.log"
    done
    demo_py up --api "$API_URL" --host "$HOST" --state "$ROOT" \
        --project "$PROJECT" --br-int "$BR_INT" --br-ex "$BR_EX" --physnet "$PHYSNET" \
        --instances "$ROOT/etc/instances.json"
}

status() {
    local name pid
    for name in nova "${AGENTS[@]}"; do
        if pid=$(alive "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running"; fi
    done
    bash tools/neutron-server.sh status 2>&1 || true
    echo "logs: $ROOT/log/ (agents), $AGENTKIT_NEUTRON_STATE/log/ (neutron-server)"
}

down() {
    VENV=$(bash tools/venv.sh)
    local out
    if out=$(bash tools/neutron-server.sh status 2>/dev/null); then
        server_endpoints "$out"
        if alive l2 >/dev/null; then
            demo_py down --api "$API_URL" --host "$HOST" --state "$ROOT" \
                --project "$PROJECT" --br-int "$BR_INT" --br-ex "$BR_EX" \
                --instances "$ROOT/etc/instances.json" || true
        fi
    fi
    say "stopping the agents and the stand-in Nova"
    stop "${AGENTS[@]}" nova
    if [ -n "${API_URL:-}" ]; then
        demo_py forget-agents --api "$API_URL" --host "$HOST" \
            --state "$ROOT" --project "$PROJECT" --instances "$ROOT/etc/instances.json" || true
    fi
    case "$AGENTKIT_NEUTRON_STATE" in
    "$ROOT"/*)
        say "stopping neutron-server and removing its database"
        bash tools/neutron-server.sh purge 2>&1 | sed 's/^/    /' ;;
    *) echo "    neutron-server ($AGENTKIT_NEUTRON_STATE) is not the demo's: left running" ;;
    esac
    say "removing the bridges"
    local br
    for br in "$BR_INT" "$BR_TUN" "$BR_EX"; do
        ovs-vsctl --if-exists del-br "$br" && echo "    $br"
    done
    rm -rf "$ROOT"
    echo "    removed $ROOT"
}

case "${1:-up}" in
up) up ;;
status) status ;;
down) down ;;
*) echo "usage: $0 [up|status|down]" >&2; exit 2 ;;
esac
