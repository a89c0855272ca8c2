"""``agentkit-metadata``: the metadata agent (neutron-metadata-agent's role).

It serves ``metadata_proxy_socket`` for the per-namespace proxies, finds the
instance behind each request with ``get_ports`` on ``q-plugin`` and forwards
the request, signed, to Nova's metadata API
(:mod:`agentkit.agent.metadata_server`). It consumes no topic; like
Neutron's metadata agent it reports its state with a call on the first
report and with casts afterwards.
"""

import logging
from typing import Any

from agentkit.agent import base
from agentkit.agent import metadata_lookup
from agentkit.agent import metadata_server
from agentkit.agent import nova_metadata
from agentkit.api import agent_types
from agentkit.conf import metadata as metadata_conf  # noqa: F401 (options)
from agentkit.rpc import metadata_api
from agentkit.rpc import topics

LOG = logging.getLogger(__name__)

#: Seconds requests in flight get to finish when the agent stops.
STOP_GRACE = 1.0


class MetadataAgent(base.Agent):
    binary = 'agentkit-metadata'
    agent_type = agent_types.METADATA
    report_topic = topics.NO_TOPIC
    report_with_call = False
    #: ready once the socket listens (it has nothing to sync)
    ready_after_first_sync = False

    plugin_api: metadata_api.MetadataPluginApi | None = None
    proxy_server: metadata_server.MetadataProxyServer | None = None

    def load_drivers(self) -> None:
        """The metadata agent has no drivers of its own."""

    def rpc_topics(self) -> dict[str, list[object]]:
        return {}

    def setup_rpc_clients(self) -> None:
        self.plugin_api = metadata_api.MetadataPluginApi(
            self.transport, self.host, timeout=self.conf.metadata_rpc_timeout)

    def start(self) -> None:
        """RPC and state reports first (the lookups need the client), then
        the socket: from then on proxies are answered."""
        super().start()
        assert self.plugin_api is not None
        lookup = metadata_lookup.InstanceLookup(
            self.plugin_api, ttl=lambda: self.conf.metadata_cache_ttl,
            rpc_timeout=lambda: self.conf.metadata_rpc_timeout)
        proxy = metadata_server.MetadataProxy(
            lookup, nova_metadata.NovaMetadataClient(self.conf))
        self.proxy_server = metadata_server.MetadataProxyServer(self.conf, proxy)
        self.proxy_server.start()
        self.set_ready(f'listening on {self.conf.metadata_proxy_socket}')

    def stop(self, timeout: float = 5.0) -> None:
        """Close the socket before anything else, so proxies fail fast
        while the agent is down; then the usual bounded stop."""
        if self.proxy_server is not None:
            try:
                self.proxy_server.stop(grace=min(STOP_GRACE, timeout * 0.2))
            except Exception:
                LOG.exception('Stopping the metadata server failed')
        super().stop(timeout)

    def reload_config(self) -> None:
        """The cache TTL, timeouts and the shared secret are read per
        request; forget cached lookups so a changed TTL applies at once."""
        if self.proxy_server is not None:
            self.proxy_server.proxy.lookup.cache.clear()

    def get_configurations(self) -> dict[str, Any]:
        """Neutron's metadata agent's four keys; never the shared secret."""
        return {
            'metadata_proxy_socket': self.conf.metadata_proxy_socket,
            'nova_metadata_host': self.conf.nova_metadata_host,
            'nova_metadata_port': self.conf.nova_metadata_port,
            'log_agent_heartbeats': self.conf.agent.log_agent_heartbeats,
        }
