"""``device_owner`` values neutron-server gives the ports it creates itself.

Agents and drivers tell the cloud's own ports (DHCP servers, router
interfaces, floating IPs) from the VMs' by this field: DHCP serves no host
entry for some of them, the metadata agent finds a router's networks by
them, the firewall leaves them all unfiltered. The values are neutron-lib's.
"""

#: Every port neutron-server owns has a ``device_owner`` with this prefix.
NETWORK_PREFIX = 'network:'

DHCP = 'network:dhcp'
ROUTER_INTERFACE = 'network:router_interface'
ROUTER_INTERFACE_DISTRIBUTED = 'network:router_interface_distributed'
HA_ROUTER_REPLICATED_INTERFACE = 'network:ha_router_replicated_interface'
ROUTER_HA_INTERFACE = 'network:router_ha_interface'
FLOATINGIP = 'network:floatingip'
ROUTER_GATEWAY = 'network:router_gateway'
DISTRIBUTED = 'network:distributed'

#: The ports that attach a router to its internal networks (legacy, HA,
#: DVR), in neutron-lib's order: the metadata agent sends this list as a
#: ``get_ports`` filter. The gateway and HA-network ports are not among them.
ROUTER_INTERFACE_OWNERS = (ROUTER_INTERFACE, HA_ROUTER_REPLICATED_INTERFACE,
                           ROUTER_INTERFACE_DISTRIBUTED)
