"""``agentkit-metadata``: the metadata agent.

It consumes no topic; like Neutron's metadata agent it reports its state
with a call on the first report and with casts afterwards.
"""

from typing import Any

from agentkit.agent import base
from agentkit.conf import metadata as metadata_conf  # noqa: F401 (options)
from agentkit.rpc import topics


class MetadataAgent(base.Agent):
    binary = 'agentkit-metadata'
    agent_type = topics.AGENT_TYPE_METADATA
    report_topic = topics.NO_TOPIC
    report_with_call = False

    def load_drivers(self) -> None:
        """The metadata agent has no drivers of its own."""

    def rpc_topics(self) -> dict[str, list[object]]:
        return {}

    def get_configurations(self) -> dict[str, Any]:
        return {
            'metadata_proxy_socket': self.conf.metadata_proxy_socket,
            'nova_metadata_host': self.conf.nova_metadata_host,
            'nova_metadata_port': self.conf.nova_metadata_port,
            'log_agent_heartbeats': self.conf.agent.log_agent_heartbeats,
        }
