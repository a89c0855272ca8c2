"""What Open vSwitch has on this host; written only for ``--probe``'s port.

The doctor's one way to OVSDB, so that the rest of it does not depend on
how :mod:`agentkit.lib` spells its OVS API: only the shared connection and
a bridge's public methods are used here. The two writes add and remove
the probe port of :mod:`.probe` (no ``iface-id``: the L2 agent leaves it alone).
"""

import dataclasses
import os

from agentkit.lib.ovs import connection as ovs_connection
from agentkit.lib.ovs import errors as ovs_errors

#: Interface.external_ids key marking a probe port (the value: the doctor's pid).
PROBE = 'agentkit-doctor-probe'
#: Neutron's Port.other_config keys the L2 agent records a network's wiring in.
NET_UUID = 'net_uuid'
TAG = 'tag'


@dataclasses.dataclass(frozen=True)
class OvsPort:
    name: str
    bridge: str
    tag: int | None
    other_config: dict[str, str]
    iface_id: str | None = None

    @property
    def recorded_tag(self) -> int | None:
        """The local VLAN the L2 agent recorded for the port's network."""
        value = self.other_config.get(TAG, '')
        return int(value) if value.isdigit() else None


class OvsView:
    def __init__(self, endpoint: str, timeout: float) -> None:
        self._conn = ovs_connection.get_connection(endpoint, timeout=timeout)

    def bridges(self) -> list[str]:
        return self._conn.list_bridges()

    def _port(self, bridge: str, name: str, iface_id: str | None = None) -> OvsPort:
        br = self._conn.bridge(bridge)
        return OvsPort(name, bridge, br.get_port_tag(name), br.get_port_other_config(name),
                       iface_id)

    def port_of(self, port_id: str) -> OvsPort | None:
        """The OVS port whose interface carries ``iface-id`` = ``port_id``."""
        for iface in self._conn.list_interfaces_with_iface_id():
            if iface.iface_id == port_id and iface.bridge:
                return self._port(iface.bridge, iface.name, port_id)
        return None

    def network_ports(self, network_id: str) -> list[OvsPort]:
        """Every port, on every bridge, recorded as wiring ``network_id``."""
        ids = {i.name: i.iface_id for i in self._conn.list_interfaces_with_iface_id()}
        found = []
        for bridge in self.bridges():
            for name in self._conn.bridge(bridge).get_port_names():
                port = self._port(bridge, name, ids.get(name))
                if port.other_config.get(NET_UUID) == network_id:
                    found.append(port)
        return found

    def probe_ports(self, bridge: str) -> dict[str, str]:
        """The ports of ``bridge`` whose interface carries the :data:`PROBE`
        mark (what :meth:`add_probe_port` writes) -> the mark (a doctor's pid).

        Only these are the doctor's: a port merely named like a probe is not.
        """
        br = self._conn.bridge(bridge)
        if not br.exists():
            return {}
        found = {}
        for name in br.get_port_names():
            try:
                mark = br.get_interface_external_ids(name).get(PROBE)
            except ovs_errors.OvsdbNotFound:   # gone meanwhile, or its interface named otherwise
                continue
            if mark is not None:
                found[name] = mark
        return found

    def add_probe_port(self, bridge: str, name: str, tag: int) -> None:
        """The probe's veth end as an access port of local VLAN ``tag``."""
        self._conn.bridge(bridge).add_port(name, tag=tag,
                                           external_ids={PROBE: str(os.getpid())})

    def delete_port(self, bridge: str, name: str) -> None:
        br = self._conn.bridge(bridge)
        if br.exists():
            br.delete_port(name)
