"""Fake VMs: a namespace plugged into a switch the way nova/os-vif does it."""

import subprocess

from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.lib.ovs import bridge as ovs_bridge


def run_in(namespace: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(['ip', 'netns', 'exec', namespace, *argv],
                          capture_output=True, text=True, timeout=timeout)


def ping(namespace: str, address: str, count: int = 2, wait: int = 2) -> bool:
    return run_in(namespace, 'ping', '-c', str(count), '-W', str(wait),
                  '-i', '0.2', address).returncode == 0


class FakeVM:
    """``eth0`` in namespace ``name`` on a veth whose host end is ``tap``."""

    def __init__(self, name: str, port_id: str, mac: str, mtu: int = 1450,
                 host_ns: str | None = None) -> None:
        """``host_ns``: the namespace of a simulated second host that holds the tap."""
        self.name = name
        self.port_id = port_id
        self.mac = mac
        self.tap = 'tap' + port_id[:11]
        self.mtu = mtu
        self.host_ns = host_ns
        ip_lib.IPWrapper(name).ensure_namespace()
        ip_lib.IPWrapper(name).device('lo').link.set_up()
        if host_ns is None:
            ip_lib.IPWrapper().add_veth(self.tap, 'eth0', peer_namespace=name,
                                        mtu=mtu, peer_mac=mac)
        else:
            ip_lib.IPWrapper(name).add_veth('eth0', self.tap, peer_namespace=host_ns,
                                            mtu=mtu, mac=mac)
        ip_lib.IPDevice(self.tap, host_ns).link.set_up()
        ip_lib.IPDevice('eth0', name).link.set_up()

    def plug_ovs(self, bridge: ovs_bridge.OVSBridge) -> None:
        """As os-vif: add-port with iface-id/attached-mac/iface-status."""
        # Veths on a userspace-datapath bridge need TX checksum offload off.
        subprocess.run(['ethtool', '-K', self.tap, 'tx', 'off'],
                       capture_output=True, check=True)
        run_in(self.name, 'ethtool', '-K', 'eth0', 'tx', 'off')
        bridge.add_port(self.tap, external_ids={
            'iface-id': self.port_id, 'attached-mac': self.mac,
            'iface-status': 'active', 'vm-uuid': self.port_id})

    @property
    def qbr(self) -> str:
        """The per-port Linux bridge of a hybrid plug (os-vif's name)."""
        return 'qbr' + self.port_id[:11]

    @property
    def qvb(self) -> str:
        """The veth end in ``qbr``."""
        return 'qvb' + self.port_id[:11]

    @property
    def qvo(self) -> str:
        """The veth end on br-int, which carries the iface-id."""
        return 'qvo' + self.port_id[:11]

    def plug_ovs_hybrid(self, bridge: ovs_bridge.OVSBridge) -> None:
        """As os-vif's hybrid plug: tap in ``qbr``, ``qvb``/``qvo`` to ``bridge``.

        The iptables_hybrid firewall filters where the tap crosses ``qbr``
        (br_netfilter, ``-m physdev``), so the tap must stay off OVS; the
        OVS agent finds the port by the iface-id on ``qvo``. Undo with
        :meth:`unplug_ovs_hybrid` before :meth:`destroy`.
        """
        # Every hop to a userspace-datapath bridge is a veth: its packets
        # must leave with their checksums filled in, from the VM onwards.
        subprocess.run(['ethtool', '-K', self.tap, 'tx', 'off'],
                       capture_output=True, check=True)
        run_in(self.name, 'ethtool', '-K', 'eth0', 'tx', 'off')
        plug_ovs_hybrid(self.port_id, self.mac, self.mtu, bridge)
        # libvirt puts the tap into the bridge os-vif made.
        ip_lib.IPDevice(self.tap).link.set_master(self.qbr)

    def unplug_ovs_hybrid(self, bridge: ovs_bridge.OVSBridge) -> None:
        """Remove what :meth:`plug_ovs_hybrid` made; absent parts are fine."""
        unplug_ovs_hybrid(self.port_id, bridge)

    def set_ip(self, cidr: str) -> None:
        ip_lib.IPDevice('eth0', self.name).addr.add(cidr)

    def destroy(self, bridge: ovs_bridge.OVSBridge | None = None) -> None:
        if bridge is not None:
            bridge.delete_port(self.tap, if_exists=True)
        tap = ip_lib.IPDevice(self.tap, self.host_ns)
        if tap.exists():
            tap.delete()
        ip_lib.IPWrapper(self.name).delete_namespace()


def plug_ovs_hybrid(port_id: str, mac: str, mtu: int, bridge: ovs_bridge.OVSBridge,
                    offload: bool = False) -> None:
    """os-vif's hybrid plug of a port, before libvirt adds the VM's tap.

    ``qbr<id>`` (IPv6 off, as os-vif does: the host takes no part in the
    network), the ``qvb``/``qvo`` veth between it and ``bridge``, ``qvo``
    on ``bridge`` with the iface-id the OVS agent finds the port by.
    ``offload``: leave TX checksum offload on (no traffic will cross).
    """
    root = ip_lib.IPWrapper()
    qbr = root.add_bridge(naming.hybrid_bridge_name(port_id))
    qbr.disable_ipv6()
    qvb_name, qvo_name = 'qvb' + port_id[:11], 'qvo' + port_id[:11]
    qvb, qvo = root.add_veth(qvb_name, qvo_name, mtu=mtu)
    if not offload:
        for device in (qvb_name, qvo_name):
            subprocess.run(['ethtool', '-K', device, 'tx', 'off'],
                           capture_output=True, check=True)
    qvb.link.set_master(qbr.name)
    for device in (qbr, qvb, qvo):
        device.link.set_up()
    bridge.add_port(qvo_name, external_ids={
        'iface-id': port_id, 'attached-mac': mac,
        'iface-status': 'active', 'vm-uuid': port_id})


def unplug_ovs_hybrid(port_id: str, bridge: ovs_bridge.OVSBridge) -> None:
    """Remove what :func:`plug_ovs_hybrid` made; absent parts are fine."""
    qvo = 'qvo' + port_id[:11]
    bridge.delete_port(qvo, if_exists=True)
    for name in (qvo, naming.hybrid_bridge_name(port_id)):  # qvb goes with qvo
        device = ip_lib.IPDevice(name)
        if device.exists():
            device.delete()


def destroy_guest(namespace: str, tap: str) -> None:
    """Cleanup of a half-built or whole fake VM: its tap, then its namespace."""
    if ip_lib.device_exists(tap):
        ip_lib.IPDevice(tap).delete()
    if ip_lib.namespace_exists(namespace):
        ip_lib.delete_namespace(namespace)


DHCLIENT_SCRIPT = """#!/bin/sh
# Records what dhclient learnt; never touches the host's resolv.conf.
env | grep -E '^(reason|new_[a-z0-9_]+|interface)=' > "{out}.$reason"
"""


class DhcpClient:
    """isc-dhclient in a VM namespace that records its result, for tests."""

    def __init__(self, vm: FakeVM, workdir: str) -> None:
        import os
        self.vm = vm
        self.dir = os.path.join(workdir, vm.name)
        os.makedirs(self.dir, exist_ok=True)
        self.script = os.path.join(self.dir, 'record.sh')
        with open(self.script, 'w') as f:
            f.write(DHCLIENT_SCRIPT.format(out=os.path.join(self.dir, 'result')))
        os.chmod(self.script, 0o755)
        self.conf = os.path.join(self.dir, 'dhclient.conf')
        with open(self.conf, 'w') as f:
            f.write('timeout 8;\nretry 1;\ninitial-interval 1;\n'
                    'request subnet-mask, broadcast-address, routers, '
                    'interface-mtu, rfc3442-classless-static-routes, '
                    'domain-name-servers, domain-name;\n'
                    'option rfc3442-classless-static-routes code 121 = '
                    'array of unsigned integer 8;\n')
        self.leases = os.path.join(self.dir, 'leases')

    def request(self, timeout: float = 12.0) -> dict[str, str] | None:
        """One DHCP exchange; the bound lease's variables, or None."""
        import glob
        import os
        import time
        for old in glob.glob(os.path.join(self.dir, 'result.*')):
            os.unlink(old)
        pidfile = os.path.join(self.dir, 'pid')
        proc = subprocess.Popen(
            ['ip', 'netns', 'exec', self.vm.name, 'dhclient', '-d', '-1',
             '-sf', self.script, '-cf', self.conf, '-lf', self.leases,
             '-pf', pidfile, 'eth0'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        result = None
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                for reason in ('BOUND', 'REBOOT', 'RENEW'):
                    path = os.path.join(self.dir, f'result.{reason}')
                    if os.path.exists(path):
                        time.sleep(0.05)
                        with open(path) as f:
                            result = dict(line.rstrip('\n').split('=', 1)
                                          for line in f if '=' in line)
                        # dhclient writes its lease file after the script
                        # ran; a later renewal needs it.
                        ip = result.get('new_ip_address', '')
                        lease_wait = time.monotonic() + 3
                        while time.monotonic() < lease_wait:
                            if (os.path.exists(self.leases)
                                    and ip in open(self.leases).read()):
                                break
                            time.sleep(0.05)
                        return result
                time.sleep(0.05)
            return None
        finally:
            proc.kill()
            proc.wait(5)


def attach_host(namespace: str, outside: str, bridge: str, cidr: str,
                gateway: str | None = None, mac: str | None = None,
                mtu: int | None = None) -> ip_lib.IPDevice:
    """A host on a Linux ``bridge``: ``namespace``'s ``eth0`` is a veth whose
    other end, ``outside``, is a port of the bridge. Returns ``outside``."""
    outside_end, inside = ip_lib.IPWrapper().add_veth(
        outside, 'eth0', peer_namespace=namespace, mtu=mtu, peer_mac=mac)
    outside_end.link.set_master(bridge)
    outside_end.link.set_up()
    inside.addr.add(cidr)
    inside.link.set_up()
    if gateway:
        inside.route.add_gateway(gateway)
    return outside_end
