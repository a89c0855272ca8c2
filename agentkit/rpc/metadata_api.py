"""Client of ``q-plugin`` for the metadata agent (Neutron's MetadataPluginAPI).

neutron-server serves it with ``MetadataRpcCallback`` (neutron/api/rpc/
handlers/metadata_rpc.py): target version 1.0, no namespace, one method,
``get_ports(context, filters)``, which is the plugin's ``get_ports`` with an
admin context, i.e. REST-shaped port dicts of every project
(tests/fixtures/neutron29/get_ports.json).
"""

from typing import Any

import oslo_messaging

from agentkit.api import device_owner
from agentkit.rpc import client
from agentkit.rpc import topics

ROUTER_INTERFACE_OWNERS = device_owner.ROUTER_INTERFACE_OWNERS


class MetadataPluginApi(client.ServerApiClient):
    """``get_ports`` exactly as neutron-metadata-agent sends it.

    Each call is bounded: ``timeout`` for the answer and ``retry`` for
    (re)connecting to the broker, because a VM's HTTP request waits on it;
    oslo.messaging's defaults (60 s, reconnect forever) would hold the
    request, and a server thread, while RabbitMQ is down.
    """

    topic = topics.PLUGIN
    base_version = '1.0'

    def __init__(self, transport: oslo_messaging.Transport, host: str,
                 timeout: float = 5, retry: int = 1) -> None:
        super().__init__(transport, host, timeout=timeout)
        self.retry = retry

    def get_ports(self, filters: dict[str, Any], timeout: float | None = None
                  ) -> list[dict[str, Any]]:
        """Ports matching Neutron ``filters`` (attribute -> allowed values;
        ``fixed_ips`` -> {'ip_address': [...]}); [] when none match."""
        return self._call('1.0', 'get_ports', timeout=timeout, retry=self.retry,
                          filters=filters)

    def get_router_interfaces(self, router_id: str, timeout: float | None = None
                              ) -> list[dict[str, Any]]:
        """The interface ports of ``router_id`` (MetadataProxyHandler's
        ``_get_router_networks`` filter)."""
        return self.get_ports({'device_id': [router_id],
                               'device_owner': list(ROUTER_INTERFACE_OWNERS)},
                              timeout=timeout)

    def get_ports_by_address(self, networks: list[str], ip_address: str | None = None,
                             mac_address: str | None = None,
                             timeout: float | None = None) -> list[dict[str, Any]]:
        """The ports of ``networks`` holding ``ip_address`` (or, for an IPv6
        link-local source, whose MAC is ``mac_address``), as
        ``_get_port_filters`` builds the filter."""
        filters: dict[str, Any] = {'network_id': list(networks)}
        if mac_address:
            filters['mac_address'] = [mac_address]
        else:
            filters['fixed_ips'] = {'ip_address': [ip_address]}
        return self.get_ports(filters, timeout=timeout)
