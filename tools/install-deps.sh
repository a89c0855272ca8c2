#!/usr/bin/env bash
# Install and start everything agentkit needs on a fresh Debian 12 machine.
# Idempotent: re-running it only starts what is not running yet.
#   - Debian packages from bindep.txt (OVS, RabbitMQ, dnsmasq, iptables, haproxy, radvd, ...)
#   - Open vSwitch (ovsdb-server + ovs-vswitchd, userspace datapath capable) via ovs-ctl
#   - RabbitMQ (detached) with a vhost and user for agentkit
set -euo pipefail
cd "$(dirname "$0")/.."

RABBIT_VHOST=${AGENTKIT_RABBIT_VHOST:-agentkit}
RABBIT_USER=${AGENTKIT_RABBIT_USER:-agentkit}
RABBIT_PASS=${AGENTKIT_RABBIT_PASS:-agentkit}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { echo "[install-deps] $*"; }

packages=$(sed -e 's/#.*//' -e 's/\[.*\]//' bindep.txt | awk 'NF {print $1}')
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing:$missing"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086  # $missing is a list of words
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Open vSwitch: start ovsdb-server and ovs-vswitchd unless both already answer.
if ! $SUDO ovs-vsctl --timeout=2 show >/dev/null 2>&1 || ! $SUDO ovs-appctl -t ovs-vswitchd version >/dev/null 2>&1; then
    log "starting Open vSwitch"
    $SUDO /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1
fi
$SUDO ovs-vsctl --timeout=10 show >/dev/null

# RabbitMQ: detached node, then wait for it and create the vhost/user.
if ! $SUDO rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ"
    $SUDO mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
    $SUDO chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq 2>/dev/null || true
    $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
fi
for _ in $(seq 1 120); do
    $SUDO rabbitmqctl -q await_startup >/dev/null 2>&1 && break
    sleep 1
done
$SUDO rabbitmqctl -q await_startup >/dev/null
$SUDO rabbitmqctl -q list_vhosts | grep -qx "$RABBIT_VHOST" || $SUDO rabbitmqctl -q add_vhost "$RABBIT_VHOST"
$SUDO rabbitmqctl -q list_users | awk '{print $1}' | grep -qx "$RABBIT_USER" || \
    $SUDO rabbitmqctl -q add_user "$RABBIT_USER" "$RABBIT_PASS" >/dev/null
$SUDO rabbitmqctl -q set_permissions -p "$RABBIT_VHOST" "$RABBIT_USER" ".*" ".*" ".*" >/dev/null
log "ready: OVS $(ovs-vsctl --version | head -1 | awk '{print $NF}'), RabbitMQ vhost $RABBIT_VHOST"
