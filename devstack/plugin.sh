#!/bin/bash
# DevStack plugin for agentkit: agentkit's agents in place of Neutron's.
#
#   [[local|localrc]]
#   enable_plugin agentkit <repo-url> [<branch>]
#   AGENTKIT_MECHANISM_DRIVER=openvswitch     # or linuxbridge
#
# devstack/override-defaults makes neutron-server an ML2/agents server
# (not OVN) with the mechanism driver agentkit needs; devstack/settings
# enables agentkit-l2/-dhcp/-l3/-metadata and disables Neutron's agents.
# Each agent runs as the devstack@agentkit-<agent> systemd unit that
# run_process writes, made Type=notify like etc/systemd/: `systemctl start`
# returns once the agent's first full sync is applied.
#
# AGENTKIT_DEVSTACK_DRY_RUN=1 runs no host command (installing directories,
# deleting namespaces, killing daemons): each is printed as
# "agentkit-dry-run: <command>" instead. Configuration files are still
# written (point AGENTKIT_CONF_DIR somewhere harmless), and devstack's own
# functions (iniset, run_process, ...) are whatever the caller defined:
# tests/unit/test_devstack_plugin.py gives stubs that record the calls.

AGENTKIT_DIR=${AGENTKIT_DIR:-$DEST/agentkit}
AGENTKIT_CONF_DIR=${AGENTKIT_CONF_DIR:-/etc/agentkit}
AGENTKIT_STATE_PATH=${AGENTKIT_STATE_PATH:-$DATA_DIR/agentkit}
AGENTKIT_MECHANISM_DRIVER=${AGENTKIT_MECHANISM_DRIVER:-openvswitch}
AGENTKIT_DATAPATH_TYPE=${AGENTKIT_DATAPATH_TYPE:-${OVS_DATAPATH_TYPE:-system}}
AGENTKIT_FIREWALL_DRIVER=${AGENTKIT_FIREWALL_DRIVER:-iptables_hybrid}
AGENTKIT_TUNNEL_TYPES=${AGENTKIT_TUNNEL_TYPES:-vxlan}
AGENTKIT_LOCAL_IP=${AGENTKIT_LOCAL_IP:-${TUNNEL_ENDPOINT_IP:-$HOST_IP}}
AGENTKIT_PHYSICAL_NETWORK=${AGENTKIT_PHYSICAL_NETWORK:-${PUBLIC_PHYSICAL_NETWORK:-public}}
# openvswitch: physnet:bridge; linuxbridge: physnet:interface (set it to
# the interface that carries the external network).
AGENTKIT_BRIDGE_MAPPINGS=${AGENTKIT_BRIDGE_MAPPINGS:-$AGENTKIT_PHYSICAL_NETWORK:${PUBLIC_BRIDGE:-br-ex}}
AGENTKIT_PHYSICAL_INTERFACE_MAPPINGS=${AGENTKIT_PHYSICAL_INTERFACE_MAPPINGS:-}
AGENTKIT_METADATA_SECRET=${AGENTKIT_METADATA_SECRET:-}
# The agents run as root: they exec their privsep helpers directly (sudo's
# secure_path would not find privsep-helper in devstack's venv).
AGENTKIT_USER=${AGENTKIT_USER:-root}
AGENTKIT_AGENTS="l2 dhcp l3 metadata"

# -- helpers -------------------------------------------------------------------

# Run a command that changes the host (as root), or print it in dry-run mode.
function _agentkit_host {
    if [[ "${AGENTKIT_DEVSTACK_DRY_RUN:-0}" == "1" ]]; then
        echo "agentkit-dry-run: $*"
    else
        sudo "$@"
    fi
}

# Sets AGENTKIT_SERVER_MECHANISM_DRIVER, the ML2 mechanism driver
# neutron-server needs for agentkit's L2 agent; dies on an unknown one.
# (Not a $(...) helper: die in a subshell would not stop stack.sh.)
function agentkit_check_mechanism_driver {
    case "$AGENTKIT_MECHANISM_DRIVER" in
        openvswitch) AGENTKIT_SERVER_MECHANISM_DRIVER=openvswitch ;;
        # Neutron 29 has no linuxbridge driver any more; agentkit ships one.
        linuxbridge) AGENTKIT_SERVER_MECHANISM_DRIVER=agentkit_linuxbridge ;;
        *) die $LINENO "AGENTKIT_MECHANISM_DRIVER: openvswitch or linuxbridge, not '$AGENTKIT_MECHANISM_DRIVER'" ;;
    esac
}

# -- phases --------------------------------------------------------------------

function install_agentkit {
    # Into devstack's Python environment, next to neutron-server: it loads
    # the agentkit_linuxbridge ML2 driver from there.
    setup_develop "$AGENTKIT_DIR"
}

function configure_agentkit_server {
    local ml2_conf="/$Q_PLUGIN_CONF_FILE"
    iniset "$ml2_conf" ml2 mechanism_drivers "$AGENTKIT_SERVER_MECHANISM_DRIVER"
    iniset "$ml2_conf" ml2 tenant_network_types "$AGENTKIT_TUNNEL_TYPES"
    iniset "$ml2_conf" ml2_type_flat flat_networks "$AGENTKIT_PHYSICAL_NETWORK"
    iniset "$ml2_conf" ml2_type_vxlan vni_ranges "${TENANT_TUNNEL_RANGES:-1:1000}"
}

function configure_agentkit {
    agentkit_check_mechanism_driver
    _agentkit_host install -d -o "$STACK_USER" "$AGENTKIT_CONF_DIR"
    _agentkit_host install -d "$AGENTKIT_STATE_PATH"
    cp "$AGENTKIT_DIR"/etc/agentkit/*.ini "$AGENTKIT_CONF_DIR/"

    local conf="$AGENTKIT_CONF_DIR/agentkit.ini"
    iniset "$conf" DEFAULT transport_url "$(get_transport_url)"
    iniset "$conf" DEFAULT host "$(hostname)"
    iniset "$conf" DEFAULT state_path "$AGENTKIT_STATE_PATH"
    iniset "$conf" DEFAULT debug "$ENABLE_DEBUG_LOG_LEVEL"
    iniset "$conf" ovs datapath_type "$AGENTKIT_DATAPATH_TYPE"

    local l2="$AGENTKIT_CONF_DIR/l2_agent.ini"
    iniset "$l2" l2 mechanism_driver "$AGENTKIT_MECHANISM_DRIVER"
    iniset "$l2" l2 tunnel_types "$AGENTKIT_TUNNEL_TYPES"
    iniset "$l2" l2 local_ip "$AGENTKIT_LOCAL_IP"
    iniset "$l2" securitygroup firewall_driver "$AGENTKIT_FIREWALL_DRIVER"
    if [[ "$AGENTKIT_MECHANISM_DRIVER" == "openvswitch" ]]; then
        iniset "$l2" l2 bridge_mappings "$AGENTKIT_BRIDGE_MAPPINGS"
    elif [[ -n "$AGENTKIT_PHYSICAL_INTERFACE_MAPPINGS" ]]; then
        iniset "$l2" linux_bridge physical_interface_mappings "$AGENTKIT_PHYSICAL_INTERFACE_MAPPINGS"
    fi

    local agent
    for agent in dhcp l3; do
        iniset "$AGENTKIT_CONF_DIR/${agent}_agent.ini" DEFAULT interface_driver \
            "$AGENTKIT_MECHANISM_DRIVER"
    done
    local meta="$AGENTKIT_CONF_DIR/metadata_agent.ini"
    iniset "$meta" DEFAULT nova_metadata_host "${Q_META_DATA_IP:-$SERVICE_HOST}"
    iniset "$meta" DEFAULT metadata_proxy_shared_secret "$AGENTKIT_METADATA_SECRET"

    if is_service_enabled q-svc neutron-api; then
        configure_agentkit_server
    fi
}

function start_agentkit {
    local bin_dir
    bin_dir=$(get_python_exec_prefix)
    local agent unit
    for agent in $AGENTKIT_AGENTS; do
        if ! is_service_enabled "agentkit-$agent"; then
            continue
        fi
        # run_process writes the unit with iniset, which keeps these keys.
        unit="$SYSTEMD_DIR/devstack@agentkit-$agent.service"
        iniset -sudo "$unit" Service Type notify
        iniset -sudo "$unit" Service NotifyAccess main
        iniset -sudo "$unit" Service TimeoutStartSec 600
        run_process "agentkit-$agent" "$bin_dir/agentkit-$agent --config-file $AGENTKIT_CONF_DIR/agentkit.ini --config-file $AGENTKIT_CONF_DIR/${agent}_agent.ini" "" "$AGENTKIT_USER"
    done
}

function stop_agentkit {
    local agent
    for agent in $AGENTKIT_AGENTS; do
        stop_process "agentkit-$agent"
    done
}

# What the agents leave on purpose when they stop (so VMs keep their
# network across restarts) goes at clean: their daemons, namespaces, state.
function cleanup_agentkit {
    local daemon ns
    for daemon in dnsmasq haproxy radvd; do
        _agentkit_host pkill -f -- "$daemon.*$AGENTKIT_STATE_PATH/" || true
    done
    for ns in $(ip netns list 2>/dev/null | awk '/^(qdhcp|qrouter)-/ {print $1}'); do
        _agentkit_host ip netns delete "$ns"
    done
    _agentkit_host rm -rf "$AGENTKIT_STATE_PATH"
}

if is_service_enabled agentkit-l2 agentkit-dhcp agentkit-l3 agentkit-metadata; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        install_agentkit
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        configure_agentkit
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        start_agentkit
    fi
    if [[ "$1" == "unstack" ]]; then
        stop_agentkit
    fi
    if [[ "$1" == "clean" ]]; then
        cleanup_agentkit
    fi
fi
