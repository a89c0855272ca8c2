"""What this host has: devices, namespaces, addresses, dnsmasq; read only.

Devices and namespaces come through :mod:`agentkit.lib.ip_lib` (netlink in
the privsep daemon); the DHCP server and the metadata proxy are described by
the configured DHCP and metadata drivers themselves
(``DhcpDriver.service_state``, ``MetadataDriver.proxy_state``), so that the
doctor and the drivers cannot disagree on where their files are.
"""

import dataclasses
import os
from typing import Any

from agentkit import exceptions
from agentkit.agent import router_intent
from agentkit.api import dhcp as dhcp_api
from agentkit.api import metadata as metadata_api
from agentkit.doctor import hosts_ovs
from agentkit.doctor import probe as doctor_probe
from agentkit.lib import external_process
from agentkit.lib import ip_lib
from agentkit.privileged import iptables

ProcessState = external_process.ProcessState


@dataclasses.dataclass(frozen=True)
class DnsmasqState:
    pid_file: str
    host_file: str
    pid: int | None
    argv: tuple[str, ...] | None      # None: no such process
    hosts: dict[str, str]             # address -> MAC, from the host file
    running: bool


class HostView:
    """Every read the hops make, in one place (unit tests replace it)."""

    def __init__(self, ovs: hosts_ovs.OvsView | None, dhcp: dhcp_api.DhcpDriver,
                 metadata: metadata_api.MetadataDriver, state_path: str = '',
                 prober: doctor_probe.Prober | None = None) -> None:
        self.ovs = ovs
        self.dhcp = dhcp
        self.metadata = metadata
        self.state_path = state_path
        self.prober = prober    # None: read only (no --probe)

    def _probe(self) -> doctor_probe.Prober:
        if self.prober is None:
            raise doctor_probe.ProbeError('read only: active checks need --probe')
        return self.prober

    def probe_dhcp(self, network_id: str, vlan: int | None,
                   mac: str) -> tuple[str, list[dict[str, str]]]:
        """(where the probe port was, the OFFERs a DISCOVER for ``mac`` got)."""
        return self._probe().dhcp_offers(network_id, vlan, mac)

    def probe_gateway(self, namespace: str, device: str, gateway: str) -> dict[str, Any]:
        return self._probe().gateway(namespace, device, gateway)

    def probe_connect(self, namespace: str, address: str, port: int) -> str | None:
        return self._probe().connect(namespace, address, port)

    def router_intent(self, router_id: str) -> router_intent.Recorded | None:
        """What agentkit-l3 last received for the router (its record under state_path).

        :raises InvalidPayload: the file is not a record.
        :raises OSError: it cannot be read (a directory, no permission...).
        """
        return router_intent.read(self.state_path, router_id)

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

    @staticmethod
    def routes(namespace: str) -> list[tuple[str, str]]:
        """(destination, next hop) of every route with a next hop in
        ``namespace`` but those learned from router advertisements (in a
        qrouter- namespace, the rest are agentkit-l3's)."""
        return [(r['dst'], r['gateway']) for r in ip_lib.list_routes(namespace)
                if r['gateway'] and r.get('protocol') != 'ra']

    def dnsmasq(self, network_id: str) -> DnsmasqState:
        """The network's DHCP server, as the DHCP driver describes it."""
        state = self.dhcp.service_state(network_id)
        if state is None:
            raise exceptions.AgentkitError(
                f'the DHCP driver {type(self.dhcp).__name__} cannot describe its servers')
        return DnsmasqState(state.process.pid_file, state.host_file, state.process.pid,
                            state.process.argv, dict(state.hosts), state.running)

    def metadata_proxy(self, router_id: str) -> ProcessState:
        """The router's metadata proxy, as the metadata driver describes it."""
        state = self.metadata.proxy_state(router_id)
        if state is None:
            raise exceptions.AgentkitError(
                f'the metadata driver {type(self.metadata).__name__} cannot describe '
                f'its proxies')
        return state

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

    def probe_ports(self, bridge: str) -> list[str]:
        """The OVS ports of ``bridge`` a doctor's ``--probe`` made (by their mark)."""
        return sorted(self.ovs.probe_ports(bridge)) if self.ovs else []

    def ovs_port_of(self, port_id: str) -> hosts_ovs.OvsPort | None:
        return self.ovs.port_of(port_id) if self.ovs else None

    def ovs_network_ports(self, network_id: str) -> list[hosts_ovs.OvsPort]:
        return self.ovs.network_ports(network_id) if self.ovs else []
