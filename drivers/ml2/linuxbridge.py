"""ML2 mechanism driver that binds ports to agentkit's linuxbridge agent.

Neutron 26 and later ship no linuxbridge mechanism driver, so a current
neutron-server leaves every port on a host running ``agentkit-l2`` with
``mechanism_driver = linuxbridge`` unbound. This driver fills that gap:
enable it in neutron-server's ML2 configuration::

    [ml2]
    mechanism_drivers = openvswitch,agentkit_linuxbridge

It binds a port on a host whose live agent reports ``agent_type`` ``Linux
bridge agent``, with ``binding:vif_type`` ``bridge`` (nova/os-vif plug a tap
into ``brq<network-id[:11]>``, the bridge the agent builds), when the agent
can carry one of the network's segments:

* flat/vlan: the segment's physical network is in the agent's reported
  ``interface_mappings`` (or ``bridge_mappings``);
* vxlan: ``vxlan`` is in its ``tunnel_types``;
* and, for agentkit agents, the type is in the ``network_types`` they report
  (their enabled type drivers), so a port is never bound to an agent that
  would refuse its segment.

This module imports neutron and is only importable where neutron is
installed; agentkit's agents never import it.
"""

from __future__ import annotations

from typing import Any

from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api

from neutron.agent import securitygroups_rpc
from neutron.plugins.ml2.drivers import mech_agent

#: What agentkit's linuxbridge agent reports, same as Neutron's own agent.
AGENT_TYPE = constants.AGENT_TYPE_LINUXBRIDGE
#: Types a Linux bridge agent can realise: physical ones and vxlan tunnels.
PHYSICAL_NETWORK_TYPES = (constants.TYPE_FLAT, constants.TYPE_VLAN)
TUNNEL_NETWORK_TYPES = (constants.TYPE_VXLAN,)
#: Bridge name prefix and id length, as the agent names its bridges.
BRIDGE_PREFIX = 'brq'
_ID_PREFIX_LEN = 11


def bridge_name(network_id: str) -> str:
    """``brq<network-id[:11]>``: the bridge the agent builds for a network."""
    return BRIDGE_PREFIX + network_id[:_ID_PREFIX_LEN]


class AgentkitLinuxbridgeMechanismDriver(
        mech_agent.SimpleAgentMechanismDriverBase):
    """Bind ``normal`` ports as ``bridge`` VIFs to agentkit linuxbridge agents."""

    def __init__(self) -> None:
        vif_details = {
            portbindings.CAP_PORT_FILTER:
                securitygroups_rpc.is_firewall_enabled(),
        }
        super().__init__(AGENT_TYPE, portbindings.VIF_TYPE_BRIDGE, vif_details)

    @property
    def connectivity(self) -> str:
        # L2: ports without an IP address (e.g. trunks' parents) can bind too.
        return portbindings.CONNECTIVITY_L2

    def get_allowed_network_types(self, agent: dict[str, Any] | None = None
                                  ) -> tuple[str, ...]:
        if agent is None:
            return PHYSICAL_NETWORK_TYPES + TUNNEL_NETWORK_TYPES
        conf = agent.get('configurations') or {}
        tunnels = [t for t in (conf.get('tunnel_types') or [])
                   if t in TUNNEL_NETWORK_TYPES]
        allowed = list(PHYSICAL_NETWORK_TYPES) + tunnels
        reported = conf.get('network_types')
        if isinstance(reported, list):
            # agentkit agents say which type drivers they run; Neutron's
            # own agent did not, hence no filtering without the key.
            allowed = [t for t in allowed if t in reported]
        return tuple(allowed)

    def get_mappings(self, agent: dict[str, Any]) -> dict[str, str]:
        conf = agent.get('configurations') or {}
        mappings = dict(conf.get('interface_mappings') or {})
        mappings.update(conf.get('bridge_mappings') or {})
        return mappings

    def get_vif_details(self, context: api.PortContext, agent: dict[str, Any],
                        segment: dict[str, Any]) -> dict[str, Any]:
        details = dict(self.vif_details)
        # Tells nova/os-vif which bridge to plug into instead of letting it
        # derive the same name itself.
        details[portbindings.VIF_DETAILS_BRIDGE_NAME] = bridge_name(
            context.network.current['id'])
        return details
