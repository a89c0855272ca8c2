"""What this host has: devices, namespaces, addresses, dnsmasq; read only.

Devices and namespaces come through :mod:`agentkit.lib.ip_lib` (netlink in
the privsep daemon); dnsmasq's pid, command line and host file are read
from the files the dnsmasq driver writes, with the driver's own names and
parser so that the doctor and the driver cannot disagree on the layout.
"""

import dataclasses
import os

from agentkit import exceptions
from agentkit.doctor import hosts_ovs
from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.lib import naming
from agentkit.privileged import iptables
from drivers.dhcp.dnsmasq import driver as dnsmasq_driver
from drivers.dhcp.dnsmasq import leases as dnsmasq_leases
from drivers.dhcp.dnsmasq import render as dnsmasq_files
from drivers.metadata import haproxy


@dataclasses.dataclass(frozen=True)
class ProcessState:
    pid_file: str
    pid: int | None
    argv: tuple[str, ...] | None      # None: no such process of this resource

    def runs(self, binary: str) -> bool:
        return self.argv is not None and os.path.basename(self.argv[0]) == binary


def _process(pid_file: str, resource_id: str) -> ProcessState:
    """The process of ``pid_file`` if it is alive and names the resource in its argv."""
    pid = external_process.read_pid_file(pid_file)
    argv = external_process.read_cmdline(pid) if pid else None
    if argv is not None and not any(resource_id in arg for arg in argv):
        argv = None   # a recycled pid: some other process
    return ProcessState(pid_file, pid, tuple(argv) if argv else None)


@dataclasses.dataclass(frozen=True)
class DnsmasqState:
    pid_file: str
    host_file: str
    pid: int | None
    argv: tuple[str, ...] | None      # None: no such process
    hosts: dict[str, str]             # address -> MAC, from the host file

    @property
    def running(self) -> bool:
        return ProcessState(self.pid_file, self.pid, self.argv).runs(dnsmasq_driver.SERVICE)


class HostView:
    """Every read the hops make, in one place (unit tests replace it)."""

    def __init__(self, state_path: str, ovs: hosts_ovs.OvsView | None) -> None:
        self.state_path = state_path
        self.ovs = ovs

    @staticmethod
    def link(name: str, namespace: str | None = None) -> ip_lib.LinkInfo | None:
        try:
            return ip_lib.get_link(name, namespace)
        except (exceptions.AgentkitError, OSError, LookupError):
            return None

    @staticmethod
    def namespace_exists(namespace: str) -> bool:
        return ip_lib.namespace_exists(namespace)

    @staticmethod
    def addresses(namespace: str) -> dict[str, list[str]]:
        """device -> its addresses (without prefix) in ``namespace``."""
        found: dict[str, list[str]] = {}
        for addr in ip_lib.list_addresses(namespace):
            found.setdefault(addr['device'] or '', []).append(addr['address'])
        return found

    def dnsmasq(self, network_id: str) -> DnsmasqState:
        state_dir = naming.dhcp_state_dir(self.state_path, network_id)
        pid_file = os.path.join(state_dir, dnsmasq_files.PID_FILE)
        host_file = os.path.join(state_dir, dnsmasq_files.HOST_FILE)
        process = _process(pid_file, network_id)
        hosts = {str(ip): mac for ip, mac in dnsmasq_leases.read_host_macs(host_file).items()}
        return DnsmasqState(pid_file, host_file, process.pid, process.argv, hosts)

    def metadata_proxy(self, router_id: str) -> ProcessState:
        pid_file = naming.safe_join(self.state_path, haproxy.PROXY_DIR,
                                    router_id + haproxy.PID_SUFFIX)
        return _process(pid_file, router_id)

    @staticmethod
    def _rules(namespace: str | None, table: str) -> list[str]:
        code, out, err = iptables.save(namespace, 4, table)
        if code:
            raise exceptions.AgentkitError(f'iptables-save -t {table} in '
                                           f'{namespace or "the host"}: {err.strip()}')
        return [line for line in out.splitlines() if line.startswith('-A ')]

    def nat_rules(self, namespace: str) -> list[str]:
        """``iptables-save -t nat`` of a router's namespace, one rule a line."""
        return self._rules(namespace, 'nat')

    def filter_rules(self) -> list[str]:
        """``iptables-save -t filter`` of the host: the security-group chains."""
        return self._rules(None, 'filter')

    @staticmethod
    def list_namespaces() -> list[str]:
        return ip_lib.list_namespaces()

    def bridges(self) -> list[str] | None:
        """OVS bridges, None when the doctor does not look at OVS."""
        return self.ovs.bridges() if self.ovs else None

    @staticmethod
    def processes(names: frozenset[str], proc_path: str = external_process.PROC_PATH
                  ) -> dict[str, list[int]]:
        """name -> pids of the running processes whose argv[0] or script is one of ``names``."""
        found: dict[str, list[int]] = {}
        for entry in os.listdir(proc_path):
            if not entry.isdigit():
                continue
            argv = external_process.read_cmdline(int(entry), proc_path) or []
            for arg in argv[:2]:
                name = os.path.basename(arg)
                if name in names:
                    found.setdefault(name, []).append(int(entry))
                    break
        return found

    def ovs_port_of(self, port_id: str) -> hosts_ovs.OvsPort | None:
        return self.ovs.port_of(port_id) if self.ovs else None

    def ovs_network_ports(self, network_id: str) -> list[hosts_ovs.OvsPort]:
        return self.ovs.network_ports(network_id) if self.ovs else []
