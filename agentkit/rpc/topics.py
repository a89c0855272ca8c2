"""Topic names of Neutron's agent RPC API (neutron_lib.constants)."""

CONTROL_EXCHANGE = 'neutron'

# agent -> server
PLUGIN = 'q-plugin'
REPORTS = 'q-reports-plugin'
L3PLUGIN = 'q-l3-plugin'

# server -> agent
DHCP_AGENT = 'dhcp_agent'
L3_AGENT = 'l3_agent'
AGENT_NOTIFIER_PREFIX = 'q-agent-notifier'

PORT = 'port'
NETWORK = 'network'
SECURITY_GROUP = 'security_group'
TUNNEL = 'tunnel'
UPDATE = 'update'
DELETE = 'delete'

# report_state 'topic' of agents that have no topic of their own
NO_TOPIC = 'N/A'


# Versioned-object pushes (neutron.api.rpc.handlers.resources_rpc): the only
# way neutron-server tells agents that an address group's addresses changed.
ADDRESS_GROUP_PUSH = 'neutron-vo-AddressGroup-1.2'
# ... and how it tells them of every port and network change (the L2 agent
# builds port details from these: agentkit/agent/port_cache.py).
PORT_PUSH = 'neutron-vo-Port-1.11'
NETWORK_PUSH = 'neutron-vo-Network-1.3'


def agent_notifier_topic(resource: str, operation: str) -> str:
    """``q-agent-notifier-<resource>-<operation>``, e.g. port + update."""
    return f'{AGENT_NOTIFIER_PREFIX}-{resource}-{operation}'
