"""Client of ``q-l3-plugin`` (Neutron's L3PluginApi)."""

from typing import Any

from agentkit.rpc import client
from agentkit.rpc import topics


class L3PluginApi(client.ServerApiClient):
    topic = topics.L3PLUGIN
    base_version = '1.0'

    def get_router_ids(self) -> list[str]:
        return self._call('1.9', 'get_router_ids', host=self.host)

    def sync_routers(self, router_ids: list[str] | None = None
                     ) -> list[dict[str, Any]]:
        return self._call('1.0', 'sync_routers', host=self.host,
                          router_ids=router_ids)

    def get_host_ha_router_count(self) -> int:
        return self._call('1.11', 'get_host_ha_router_count', host=self.host)

    def update_floatingip_statuses(self, router_id: str,
                                   fip_statuses: dict[str, str]) -> None:
        return self._call('1.1', 'update_floatingip_statuses',
                          router_id=router_id, fip_statuses=fip_statuses)
