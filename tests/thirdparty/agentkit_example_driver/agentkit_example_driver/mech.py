"""A mechanism driver whose "switch" is a JSON file.

Ports listed in ``[example] ports`` count as plugged; wiring records the
segment the agent resolved for each port in ``[example] status_file`` so a
test can see what the core asked the driver to do.
"""

import json
import os
import threading

from oslo_config import cfg

from agentkit.api import mechanism

OPTS = [
    cfg.ListOpt('ports', default=[], help='Port ids that count as plugged.'),
    cfg.StrOpt('status_file', default='', help='Where wiring is recorded.'),
]


class StaticMechanismDriver(mechanism.MechanismDriver):
    agent_type = 'Example agent'
    supported_network_types = frozenset({'flat', 'vxlan'})

    def __init__(self, conf, host):
        super().__init__(conf, host)
        conf.register_opts(OPTS, group='example')
        self._lock = threading.Lock()
        self._wired = {}

    def get_configurations(self):
        return {'example_ports': list(self.conf.example.ports)}

    def start_device_monitor(self, on_plugged, on_unplugged, on_resync=None):
        self._on_plugged = on_plugged

    def list_plugged_ports(self):
        return set(self.conf.example.ports)

    def _save(self):
        if self.conf.example.status_file:
            tmp = self.conf.example.status_file + '.tmp'
            with open(tmp, 'w') as f:
                json.dump(self._wired, f)
            os.replace(tmp, self.conf.example.status_file)

    def wire_port(self, binding):
        with self._lock:
            self._wired[binding.port_id] = {
                'network_id': binding.network_id,
                'network_type': binding.segment.network_type,
                'physical_network': binding.segment.physical_network,
                'tunnel_key': binding.segment.tunnel_key,
            }
            self._save()

    def unwire_port(self, port_id):
        with self._lock:
            self._wired.pop(port_id, None)
            self._save()
