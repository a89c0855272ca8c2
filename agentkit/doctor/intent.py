"""What neutron-server says a port or network should be, asked read-only.

Only calls without side effects on the server are used; each was checked
against neutron 29's handlers:

* ``get_ports`` (q-plugin, MetadataRpcCallback): the plugin's ``get_ports``
  with an admin context, a plain query.
* ``get_network_info`` (q-plugin, DhcpRpcCallback): ``Network.get_object``,
  the plugin's ``get_ports`` and the network's subnets; no scheduling.
  Also how a router's ports are found: by ``device_id``.
* ``bulk_pull`` of ``Port`` objects (q-plugin, ResourcesPullRpcCallback):
  ``Port.get_objects``; the binding levels carry the bound segment.

Deliberately not used: ``get_devices_details_list_and_failed_devices``
(moves the port to BUILD and may retry its binding),
``get_active_networks_info`` (auto-schedules networks to the asking host)
and ``sync_routers`` / ``get_router_ids`` (set the host on router ports,
auto-schedule routers). So a router's ``enable_snat`` and floating IPs have
no read-only source: the doctor shows what the host has for them and says
it could not compare.
"""

import dataclasses
from typing import Any

import oslo_messaging

from agentkit.agent import port_cache
from agentkit.api import device_owner
from agentkit.api import dhcp as dhcp_api_types
from agentkit.rpc import dhcp_api
from agentkit.rpc import metadata_api
from agentkit.rpc import plugin_api


class ServerUnreachable(Exception):
    """neutron-server did not answer a read-only call in time."""


@dataclasses.dataclass(frozen=True)
class PortIntent:
    id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[tuple[str, str], ...]   # (subnet id, address)
    host: str                                 # binding:host_id, '' if unbound
    device_owner: str
    admin_state_up: bool
    status: str

    @classmethod
    def from_rest(cls, port: dict[str, Any]) -> 'PortIntent':
        return cls(id=port['id'], network_id=port.get('network_id') or '',
                   mac_address=(port.get('mac_address') or '').lower(),
                   fixed_ips=tuple((ip.get('subnet_id') or '', ip.get('ip_address') or '')
                                   for ip in port.get('fixed_ips') or []),
                   host=port.get('binding:host_id') or '',
                   device_owner=port.get('device_owner') or '',
                   admin_state_up=bool(port.get('admin_state_up', True)),
                   status=port.get('status') or '')


@dataclasses.dataclass(frozen=True)
class Subnet:
    id: str
    cidr: str
    ip_version: int
    enable_dhcp: bool
    gateway_ip: str | None = None


@dataclasses.dataclass(frozen=True)
class NetworkIntent:
    id: str
    subnets: tuple[Subnet, ...]
    ports: tuple[PortIntent, ...]

    @classmethod
    def from_rpc(cls, info: dict[str, Any]) -> 'NetworkIntent':
        return cls(id=info['id'],
                   subnets=tuple(Subnet(s['id'], s.get('cidr', ''), int(s.get('ip_version', 4)),
                                        bool(s.get('enable_dhcp', True)),
                                        s.get('gateway_ip') or None)
                                 for s in info.get('subnets') or []),
                   ports=tuple(PortIntent.from_rest(p) for p in info.get('ports') or []))

    @property
    def dhcp_ports(self) -> list[PortIntent]:
        return [p for p in self.ports if p.device_owner == device_owner.DHCP]

    def dhcp_addresses(self, port: PortIntent) -> list[str]:
        """The port's IPv4 addresses on subnets with DHCP on: what dnsmasq must serve
        (nothing for the ports the DHCP driver gives no host entry)."""
        if port.device_owner in dhcp_api_types.NO_HOST_ENTRY_OWNERS:
            return []
        served = {s.id for s in self.subnets if s.enable_dhcp and s.ip_version == 4}
        return [ip for subnet, ip in port.fixed_ips if subnet in served]


@dataclasses.dataclass(frozen=True)
class Segment:
    network_type: str
    physical_network: str | None
    segmentation_id: int | None


def segment_of(port_object: Any) -> Segment | None:
    """The bottom bound segment of a serialised Port object, None if unbound."""
    levels = [port_cache.object_data(lv)
              for lv in port_cache.object_data(port_object).get('binding_levels') or []]
    if not levels:
        return None
    segment = port_cache.object_data(max(levels, key=lambda lv: lv.get('level') or 0)
                                     .get('segment'))
    if not segment.get('network_type'):
        return None
    return Segment(segment['network_type'], segment.get('physical_network'),
                   segment.get('segmentation_id'))


class ServerView:
    """The doctor's only way to neutron-server: read-only calls (see module doc)."""

    def __init__(self, transport: oslo_messaging.Transport, host: str,
                 timeout: float = 10) -> None:
        self._ports = metadata_api.MetadataPluginApi(transport, host, timeout=timeout)
        self._dhcp = dhcp_api.DhcpPluginApi(transport, host, timeout=timeout)
        self._objects = plugin_api.L2PluginApi(transport, host, timeout=timeout)

    @staticmethod
    def _ask(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except (oslo_messaging.MessagingTimeout,
                oslo_messaging.MessageDeliveryFailure,
                oslo_messaging.MessageUndeliverable) as exc:
            raise ServerUnreachable(str(exc) or type(exc).__name__) from exc

    def port(self, port_id: str) -> PortIntent | None:
        ports = self._ask(self._ports.get_ports, {'id': [port_id]})
        return PortIntent.from_rest(ports[0]) if ports else None

    def router_ports(self, router_id: str) -> list[PortIntent]:
        """The router's interface and gateway ports (their device_id is the router)."""
        ports = self._ask(self._ports.get_ports, {'device_id': [router_id]})
        return [PortIntent.from_rest(p) for p in ports]

    def network(self, network_id: str) -> NetworkIntent | None:
        info = self._ask(self._dhcp.get_network_info, network_id)
        return NetworkIntent.from_rpc(info) if info else None

    def segment(self, port_id: str) -> Segment | None:
        objects = self._ask(self._objects.bulk_pull, port_cache.PORT_RESOURCE,
                            port_cache.PORT_VERSION, {'id': [port_id]})
        return segment_of(objects[0]) if objects else None
