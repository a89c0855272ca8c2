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
# Agents under an empty vhost wait quietly for a server that never comes:
# say so when the (local) broker has no neutron-server consuming q-plugin.
url=$("$VENV/bin/python" -c '
import configparser
c = configparser.ConfigParser(interpolation=None, strict=False)
c.read("etc/agentkit/agentkit.ini")
print(c.get("DEFAULT", "transport_url", fallback=""))')
vhost=${url##*/}
if command -v rabbitmqctl >/dev/null && [[ "$url" == *@127.0.0.1:* || "$url" == *@localhost:* ]] \
        && ! rabbitmqctl -q list_queues -p "${vhost:-/}" name consumers 2>/dev/null \
            | awk '$1 == "q-plugin" && $2 > 0 {found=1} END {exit !found}'; then
    echo "note: no neutron-server consumes q-plugin on vhost '${vhost:-/}' ($url):"
    echo "      the agents will wait for one. Point transport_url in etc/agentkit/agentkit.ini"
    echo "      at your server's RabbitMQ, or run tools/demo.sh for a complete local setup."
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
