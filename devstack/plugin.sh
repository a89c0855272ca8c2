#!/bin/bash
# DevStack plugin for agentkit: enable with
#   enable_plugin agentkit <repo-url>
#   enable_service agentkit-l2 agentkit-dhcp agentkit-l3 agentkit-metadata
# and disable the corresponding Neutron agents (q-agt, q-dhcp, q-l3, q-meta).

AGENTKIT_DIR=${AGENTKIT_DIR:-$DEST/agentkit}
AGENTKIT_CONF_DIR=${AGENTKIT_CONF_DIR:-/etc/agentkit}
AGENTKIT_STATE_PATH=${AGENTKIT_STATE_PATH:-$DATA_DIR/agentkit}
AGENTKIT_MECHANISM_DRIVER=${AGENTKIT_MECHANISM_DRIVER:-openvswitch}
AGENTKIT_DATAPATH_TYPE=${AGENTKIT_DATAPATH_TYPE:-system}

function install_agentkit {
    setup_develop $AGENTKIT_DIR
}

function configure_agentkit {
    sudo install -d -o $STACK_USER $AGENTKIT_CONF_DIR $AGENTKIT_STATE_PATH
    local conf=$AGENTKIT_CONF_DIR/agentkit.ini
    cp $AGENTKIT_DIR/etc/agentkit/*.ini $AGENTKIT_CONF_DIR/
    iniset $conf DEFAULT transport_url $(get_transport_url)
    iniset $conf DEFAULT host $(hostname)
    iniset $conf DEFAULT state_path $AGENTKIT_STATE_PATH
    iniset $conf DEFAULT debug $ENABLE_DEBUG_LOG_LEVEL
    iniset $conf agent root_helper "sudo"
    iniset $conf ovs datapath_type $AGENTKIT_DATAPATH_TYPE
    iniset $AGENTKIT_CONF_DIR/l2_agent.ini l2 mechanism_driver $AGENTKIT_MECHANISM_DRIVER
    iniset $AGENTKIT_CONF_DIR/l2_agent.ini l2 local_ip $HOST_IP
}

function start_agentkit {
    local agent
    for agent in l2 dhcp l3 metadata; do
        if is_service_enabled agentkit-$agent; then
            run_process agentkit-$agent "$AGENTKIT_DIR/.venv/bin/agentkit-$agent \
                --config-file $AGENTKIT_CONF_DIR/agentkit.ini \
                --config-file $AGENTKIT_CONF_DIR/${agent}_agent.ini" || \
            run_process agentkit-$agent "$(which agentkit-$agent) \
                --config-file $AGENTKIT_CONF_DIR/agentkit.ini \
                --config-file $AGENTKIT_CONF_DIR/${agent}_agent.ini"
        fi
    done
}

function stop_agentkit {
    local agent
    for agent in l2 dhcp l3 metadata; do
        stop_process agentkit-$agent
    done
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
fi
