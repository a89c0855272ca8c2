"""Client of ``q-plugin`` for the L2 agent (Neutron's agent PluginApi)."""

from typing import Any

from agentkit.rpc import client
from agentkit.rpc import topics


class L2PluginApi(client.ServerApiClient):
    """Port details, device status and tunnels, as neutron-openvswitch-agent calls them."""

    topic = topics.PLUGIN
    base_version = '1.0'

    def get_devices_details_list_and_failed_devices(
            self, devices: list[str], agent_id: str) -> dict[str, Any]:
        return self._call('1.5', 'get_devices_details_list_and_failed_devices',
                          devices=devices, agent_id=agent_id, host=self.host)

    def get_network_details(self, network_id: str, agent_id: str) -> dict[str, Any]:
        return self._call('1.6', 'get_network_details', network=network_id,
                          agent_id=agent_id, host=self.host)

    def update_device_list(self, devices_up: list[str], devices_down: list[str],
                           agent_id: str, refresh_tunnels: bool = False
                           ) -> dict[str, Any]:
        return self._call('1.9', 'update_device_list', devices_up=devices_up,
                          devices_down=devices_down, agent_id=agent_id,
                          host=self.host, refresh_tunnels=refresh_tunnels)

    def tunnel_sync(self, tunnel_ip: str, tunnel_type: str) -> dict[str, Any]:
        return self._call('1.4', 'tunnel_sync', tunnel_ip=tunnel_ip,
                          tunnel_type=tunnel_type, host=self.host)

    def bulk_pull(self, resource_type: str, version: str,
                  filter_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        return self._call('1.1', 'bulk_pull', resource_type=resource_type,
                          version=version, filter_kwargs=filter_kwargs)

    def security_group_info_for_devices(self, devices: list[str]) -> dict[str, Any]:
        """Rules, members and ports of the groups of ``devices`` (SG RPC 1.3).

        Like Neutron's own agents, the call names ``call_version`` as an
        argument too: the server reads it to send members as ``[ip, mac]``
        pairs (the MAC matters for allowed address pairs) and otherwise
        logs a version mismatch and answers in the 1.2 shape.
        """
        return self._call('1.3', 'security_group_info_for_devices',
                          devices=devices, call_version='1.3')
