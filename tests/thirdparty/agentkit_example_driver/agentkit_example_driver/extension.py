"""An agent extension that counts the ports it was handed."""

from agentkit.api import extension


class AuditExtension(extension.AgentExtension):

    def __init__(self, conf, host):
        super().__init__(conf, host)
        self.handled = []

    def consume_api(self, agent_api):
        self.agent_api = agent_api

    def handle_port(self, context, port):
        self.handled.append(port.get('port_id') or port.get('device'))

    def delete_port(self, context, port):
        pass
