"""Client of ``q-plugin`` for the DHCP agent (Neutron's DhcpPluginApi)."""

from typing import Any

from agentkit.rpc import client
from agentkit.rpc import topics


class DhcpPluginApi(client.ServerApiClient):
    topic = topics.PLUGIN
    base_version = '1.0'

    def get_active_networks_info(self, enable_dhcp_filter: bool = True
                                 ) -> list[dict[str, Any]]:
        return self._call('1.1', 'get_active_networks_info', host=self.host,
                          enable_dhcp_filter=enable_dhcp_filter)

    def get_network_info(self, network_id: str) -> dict[str, Any] | None:
        return self._call('1.0', 'get_network_info', network_id=network_id,
                          host=self.host)

    def create_dhcp_port(self, port: dict[str, Any]) -> dict[str, Any] | None:
        return self._call('1.1', 'create_dhcp_port', port=port, host=self.host)

    def update_dhcp_port(self, port_id: str, port: dict[str, Any]
                         ) -> dict[str, Any] | None:
        return self._call('1.1', 'update_dhcp_port', port_id=port_id,
                          port=port, host=self.host)

    def release_dhcp_port(self, network_id: str, device_id: str) -> None:
        return self._call('1.0', 'release_dhcp_port', network_id=network_id,
                          device_id=device_id, host=self.host)

    def dhcp_ready_on_ports(self, port_ids: list[str]) -> None:
        return self._call('1.5', 'dhcp_ready_on_ports', port_ids=port_ids)
