"""Fake VMs: a namespace plugged into a switch the way nova/os-vif does it."""

import subprocess

from agentkit.lib import ip_lib
from agentkit.lib import ovs_lib


def run_in(namespace: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(['ip', 'netns', 'exec', namespace, *argv],
                          capture_output=True, text=True, timeout=timeout)


def ping(namespace: str, address: str, count: int = 2, wait: int = 2) -> bool:
    return run_in(namespace, 'ping', '-c', str(count), '-W', str(wait),
                  '-i', '0.2', address).returncode == 0


class FakeVM:
    """``eth0`` in namespace ``name`` on a veth whose host end is ``tap``."""

    def __init__(self, name: str, port_id: str, mac: str, mtu: int = 1450) -> None:
        self.name = name
        self.port_id = port_id
        self.mac = mac
        self.tap = 'tap' + port_id[:11]
        self.mtu = mtu
        ip_lib.IPWrapper(name).ensure_namespace()
        ip_lib.IPWrapper(name).device('lo').link.set_up()
        ip_lib.IPWrapper().add_veth(self.tap, 'eth0', peer_namespace=name,
                                    mtu=mtu, peer_mac=mac)
        ip_lib.IPDevice(self.tap).link.set_up()
        ip_lib.IPDevice('eth0', name).link.set_up()

    def plug_ovs(self, bridge: ovs_lib.OVSBridge) -> None:
        """As os-vif: add-port with iface-id/attached-mac/iface-status."""
        # Veths on a userspace-datapath bridge need TX checksum offload off.
        subprocess.run(['ethtool', '-K', self.tap, 'tx', 'off'],
                       capture_output=True, check=True)
        run_in(self.name, 'ethtool', '-K', 'eth0', 'tx', 'off')
        bridge.add_port(self.tap, external_ids={
            'iface-id': self.port_id, 'attached-mac': self.mac,
            'iface-status': 'active', 'vm-uuid': self.port_id})

    def set_ip(self, cidr: str) -> None:
        ip_lib.IPDevice('eth0', self.name).addr.add(cidr)

    def destroy(self, bridge: ovs_lib.OVSBridge | None = None) -> None:
        if bridge is not None:
            bridge.delete_port(self.tap, if_exists=True)
        tap = ip_lib.IPDevice(self.tap)
        if tap.exists():
            tap.delete()
        ip_lib.IPWrapper(self.name).delete_namespace()
