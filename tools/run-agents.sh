#!/usr/bin/env bash
# The main job: on a fresh Debian 12 machine, install and start what agentkit
# needs (OVS, RabbitMQ, dnsmasq, ...), build .venv and run the agents in the
# foreground with etc/agentkit/*.ini, the way neutron-server then drives them.
# Ctrl-C (or SIGTERM) stops the agents; what they built on the host stays.
#   tools/run-agents.sh [l2 dhcp l3 metadata]   (default: the agents that
#                                                have their drivers installed)
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
VENV=$(bash tools/venv.sh)
mkdir -p /var/lib/agentkit /var/log/agentkit
chmod 755 /var/lib/agentkit

agents=("$@")
if [ ${#agents[@]} -eq 0 ]; then
    agents=(l2 metadata)
    "$VENV/bin/python" -c "import sys; from agentkit import loader; sys.exit('dnsmasq' not in loader.available(loader.DHCP_DRIVERS))" 2>/dev/null && agents+=(dhcp)
    "$VENV/bin/python" -c "import sys; from agentkit import loader; sys.exit('namespace' not in loader.available(loader.L3_DRIVERS))" 2>/dev/null && agents+=(l3)
fi
pids=()
for a in "${agents[@]}"; do
    echo "starting agentkit-$a (log: /var/log/agentkit/$a.log)"
    "$VENV/bin/agentkit-$a" --config-file etc/agentkit/agentkit.ini \
        --config-file "etc/agentkit/${a}_agent.ini" \
        --log-file "/var/log/agentkit/$a.log" &
    pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM
wait
