"""``namespace`` router driver: Neutron's legacy routers in ``qrouter-`` namespaces.

One namespace per router holds a ``qr-<port>`` device per internal subnet
port and a ``qg-<port>`` device for the external gateway; the kernel
forwards between them and iptables does the NAT, exactly as Neutron's L3
agent does in ``legacy`` mode:

* SNAT of internal traffic to the gateway IP (``neutron-l3-agent-snat``,
  reached through ``neutron-postrouting-bottom``), skipped when
  ``enable_snat`` is false;
* floating IPs: a /32 on ``qg-``, DNAT in PREROUTING and OUTPUT, and a
  ``float-snat`` SNAT so the VM's own connections leave with the FIP;
* metadata: 169.254.169.254:80 from ``qr-+`` is marked and redirected to
  the per-router proxy port, which is otherwise unreachable;
* extra routes from ``router['routes']``;
* IPv6 router advertisements (radvd, :mod:`drivers.l3.radvd`) for internal
  subnets with an ``ipv6_ra_mode``; IPv6 default route and floating IPs
  stay IPv4-only, as in Neutron;
* gratuitous ARPs for every IPv4 address newly added to a router port
  (``send_arp_for_ha`` of them; ``arp_notify`` is on for qg-), so the
  upstream router learns a moved floating IP at once;
* conntrack cleanup: when a floating IP is disassociated or moved, or the
  gateway IP changes, the NAT sessions of the old mapping are deleted in
  the namespace, so they stop instead of living on.

Every call makes the host match the router *incrementally*: the live
devices, addresses and routes of the namespace are read (a handful of
netlink round trips) and only differences are changed; the iptables model
is rebuilt and applied only if its text changed. The router arrives
validated (:class:`agentkit.api.l3.Router`): a malformed interface or
floating IP was left out there without failing the router, and its device is
kept (floating IP reported ERROR) here. Operational failures are isolated per part (one port,
the gateway, iptables), the rest is still configured, and the call then
raises :class:`RouterProcessingError` so the agent retries.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import threading
from typing import Any

from oslo_config import cfg

from agentkit import exceptions
from agentkit.api import interface
from agentkit.api import l3
from agentkit.lib import arp
from agentkit.lib import conntrack
from agentkit.lib import ip_lib
from agentkit.lib import iptables_manager
from agentkit.lib import naming
from drivers.l3 import radvd

LOG = logging.getLogger(__name__)

METADATA_IP = '169.254.169.254'
# Packets that came in through qg- (Neutron's external_ingress_mark).
EXTERNAL_INGRESS_MARK = '0x2'
# Metadata requests allowed to reach the proxy port.
METADATA_ACCESS_MARK = '0x1'
ROUTER_MARK_MASK = '0xffff'
DEFAULT_ROUTES = frozenset(ip_lib.DEFAULT_DESTINATIONS.values())
ROUTER_DEVICE_PREFIXES = (naming.ROUTER_INTERFACE_PREFIX, naming.ROUTER_GATEWAY_PREFIX)
# Under state_path: what each router's iptables manager applied, so that a
# restarted agent needs no iptables-save while the namespace is unchanged.
IPTABLES_RECORDS = 'l3-iptables'


RouterProcessingError = l3.RouterProcessingError


# --------------------------------------------------------------------------
# What the host needs of a router (from the agent's validated l3.Router)
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PlacedPort:
    """A router port and the ``qr-``/``qg-`` device that realises it here."""

    port: l3.RouterPort
    device: str


@dataclasses.dataclass(frozen=True)
class RouterSpec:
    """A router as this driver lays it out in its namespace."""

    router: l3.Router
    namespace: str
    interfaces: tuple[PlacedPort, ...]
    gateway: PlacedPort | None
    routes: tuple[l3.Route, ...]
    # Devices of ports left out of the router (bad data): left as they are.
    keep_devices: frozenset[str] = frozenset()

    @property
    def id(self) -> str:
        return self.router.id

    @property
    def floating_ips(self) -> tuple[l3.FloatingIP, ...]:
        return self.router.floating_ips

    @property
    def gateway_ipv4(self) -> str | None:
        """The address SNAT uses: the gateway port's first IPv4 address."""
        return self.gateway.port.ipv4_address if self.gateway is not None else None


def plan_router(router: l3.Router) -> RouterSpec:
    """Device names, and what this driver cannot realise (logged and left out).

    Not payload validation (the agent did that): two interfaces whose
    device names collide (their ids share the first 11 characters) cannot
    both exist, and an extra route to a default destination would replace
    the default route this driver manages.
    """
    interfaces: list[PlacedPort] = []
    for port in router.interfaces:
        device = naming.router_interface_name(port.id)
        if any(p.device == device for p in interfaces):
            LOG.error('Router %s: skipping interface %s: device %s is already used',
                      router.id, port.id, device)
            continue
        interfaces.append(PlacedPort(port, device))
    gateway = (PlacedPort(router.gateway, naming.router_gateway_name(router.gateway.id))
               if router.gateway is not None else None)
    keep = {naming.router_interface_name(i) for i in router.unusable_interface_ids}
    if router.unusable_gateway_id is not None:
        keep.add(naming.router_gateway_name(router.unusable_gateway_id))
    routes = []
    for route in router.routes:
        if route.destination in DEFAULT_ROUTES:
            LOG.error('Router %s: skipping extra route: %s via %s would replace the '
                      'default route', router.id, route.destination, route.nexthop)
            continue
        routes.append(route)
    return RouterSpec(router, naming.router_namespace(router.id), tuple(interfaces),
                      gateway, tuple(routes), frozenset(keep))


def ra_prefixes(port: l3.RouterPort, router_id: str) -> tuple[radvd.RaPrefix, ...]:
    """What radvd advertises for an internal port: its subnets with an ipv6_ra_mode.

    A subnet radvd cannot advertise (e.g. SLAAC on a prefix that is not a
    /64) is logged and not advertised; the port itself still works.
    """
    prefixes = []
    for subnet in port.subnets:
        if subnet.ipv6_ra_mode is None:
            continue
        # Neutron hands DNS servers to SLAAC clients only (stateless and
        # stateful clients ask DHCPv6 for them).
        dns = subnet.dns_nameservers if subnet.ipv6_ra_mode == radvd.SLAAC else ()
        try:
            prefixes.append(radvd.RaPrefix(subnet.cidr, subnet.ipv6_ra_mode, dns))
        except exceptions.InvalidPayload as exc:
            LOG.error('Router %s: interface port %s: subnet %s not advertised: %s',
                      router_id, port.id, subnet.id, exc)
    return tuple(prefixes)


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------

@dataclasses.dataclass
class _RouterState:
    """What the driver remembers of a router between updates."""

    iptables: iptables_manager.IptablesManager
    ipv6_forwarding: bool = False
    sysctls_done: bool = False
    # Whether the router's radvd advertises something (None: not known yet,
    # e.g. one left running by an earlier agent run).
    advertising: bool | None = None
    # qr-/qg- devices that exist or were plugged (for delete_router).
    devices: set[str] = dataclasses.field(default_factory=set)
    # FIP ids reported last time: those that disappear are reported DOWN.
    fip_ids: set[str] = dataclasses.field(default_factory=set)
    # floating IP -> fixed IP in force, and the SNAT address in force: a
    # change ends the sessions of the old mapping.
    nat_map: dict[str, str] = dataclasses.field(default_factory=dict)
    snat_ip: str | None = None
    # Conntrack filters of ended mappings whose deletion has not succeeded.
    stale_flows: set[conntrack.FlowFilter] = dataclasses.field(default_factory=set)


def is_router_device(name: str) -> bool:
    return name.startswith(ROUTER_DEVICE_PREFIXES)


def _ensure_sysctls(wanted: dict[str | tuple[str, ...], int], namespace: str) -> None:
    """Read in one call, write only what differs: a restarted agent writes nothing."""
    live = ip_lib.get_sysctls(list(wanted), namespace)
    for (key, value), current in zip(wanted.items(), live):
        if current != str(value):
            ip_lib.set_sysctl(key, value, namespace)


class NamespaceRouterDriver(l3.RouterDriver):
    """Legacy (centralised, non-HA) routers, one ``qrouter-<id>`` namespace each."""

    def __init__(self, conf: cfg.ConfigOpts, host: str,
                 interface_driver: interface.InterfaceDriver) -> None:
        super().__init__(conf, host, interface_driver)
        self._routers: dict[str, _RouterState] = {}
        self._lock = threading.Lock()
        self.radvd = radvd.RadvdManager(conf)

    def stop(self) -> None:
        self.radvd.stop()  # the radvd processes keep running

    def get_configurations(self) -> dict[str, Any]:
        return self.radvd.get_configurations()

    # -- public API --------------------------------------------------------
    def existing_routers(self) -> set[str]:
        prefix = naming.ROUTER_NS_PREFIX
        routers = {ns[len(prefix):] for ns in ip_lib.list_namespaces()
                   if ns.startswith(prefix) and naming.is_valid_id(ns[len(prefix):])}
        return routers | self.radvd.active_routers()

    def process_router(self, router: l3.Router) -> dict[str, str]:
        """Make the host match ``router``.

        :returns: floating IP statuses that differ from what the server
            shows (``ACTIVE``/``ERROR``), plus ``DOWN`` for floating IPs this
            driver configured before and the router no longer has.
        :raises RouterProcessingError: some parts failed (the others were
            configured); the agent should retry.
        """
        spec = plan_router(router)
        ns = spec.namespace
        with self._lock:
            state = self._routers.get(spec.id)
            if state is None:
                state = _RouterState(iptables_manager.IptablesManager(
                    ns, state_file=self._iptables_record(spec.id)))
                self._routers[spec.id] = state
        failures: list[str] = []
        # The existence check is ~6x cheaper than create, and usually enough.
        if not ip_lib.namespace_exists(ns) and ip_lib.create_namespace(ns):
            state.iptables.invalidate()
            state.sysctls_done = state.ipv6_forwarding = False
        self._ensure_sysctls(spec, state)

        links = {link['name']: link for link in ip_lib.list_links(ns)}
        # One dump for every port's addresses (a netlink round trip each otherwise).
        addresses: dict[str | None, set[str]] = {}
        for address in ip_lib.list_addresses(ns):
            if address['scope'] == 'global':
                addresses.setdefault(address['device'], set()).add(address['cidr'])
        wanted = {p.device for p in spec.interfaces} | spec.keep_devices
        if spec.gateway is not None:
            wanted.add(spec.gateway.device)
        # A device the switch re-created elsewhere (ovs-vswitchd restart on
        # the userspace datapath) looks fine here but carries nothing.
        try:
            stale = self.interface_driver.remove_stale_devices(
                ns, sorted(n for n in wanted if n in links))
        except Exception as exc:
            LOG.exception('Router %s: checking its devices on the switch failed', spec.id)
            failures.append('stale device check: %s' % exc)
            # It may have removed some before failing: those are plugged anew.
            present = {link['name'] for link in ip_lib.list_links(ns)}
            stale = {name for name in links if name not in present}
        for name in stale:
            links.pop(name, None)
            addresses.pop(name, None)
        for name in sorted(n for n in links if is_router_device(n) and n not in wanted):
            try:
                self.interface_driver.unplug(name, ns)
                state.devices.discard(name)
            except Exception as exc:
                LOG.exception('Router %s: removing %s failed', spec.id, name)
                failures.append('unplug %s: %s' % (name, exc))

        announce: list[tuple[str, str]] = []  # (device, address) gained
        for placed in spec.interfaces:
            port = placed.port
            try:
                added = self._ensure_port(ns, placed, list(port.cidrs),
                                          links.get(placed.device),
                                          addresses.get(placed.device, set()))
                announce += [(placed.device, a) for a in added]
                state.devices.add(placed.device)
            except Exception as exc:
                LOG.exception('Router %s: interface %s failed', spec.id, port.id)
                failures.append('interface %s: %s' % (port.id, exc))

        gateway_ok = False
        removed_gw_addresses: set[str] = set()
        if spec.gateway is not None:
            gw = spec.gateway
            cidrs = list(gw.port.cidrs) + ['%s/32' % f.floating_ip for f in spec.floating_ips]
            try:
                added = self._ensure_port(ns, gw, cidrs, links.get(gw.device),
                                          addresses.get(gw.device, set()),
                                          removed=removed_gw_addresses)
                announce += [(gw.device, a) for a in added]
                state.devices.add(gw.device)
                gateway_ok = True
            except Exception as exc:
                LOG.exception('Router %s: gateway port %s failed', spec.id, gw.port.id)
                failures.append('gateway %s: %s' % (gw.port.id, exc))

        try:
            failures += self._ensure_routes(spec, gateway_ok)
        except Exception as exc:
            LOG.exception('Router %s: routes failed', spec.id)
            failures.append('routes: %s' % exc)

        ra_interfaces = []
        for placed in spec.interfaces:
            prefixes = ra_prefixes(placed.port, spec.id)
            if prefixes and placed.device in state.devices:
                ra_interfaces.append(radvd.RaInterface(placed.device, prefixes,
                                                       placed.port.mtu))
        # A router that advertises nothing, and is known not to, needs no
        # radvd bookkeeping (pid and config files) on every update.
        if ra_interfaces or state.advertising is not False:
            try:
                # After the qr- devices exist (radvd binds to them).
                self.radvd.update(spec.id, ns, ra_interfaces)
                state.advertising = bool(ra_interfaces)
            except Exception as exc:
                LOG.exception('Router %s: router advertisements failed', spec.id)
                failures.append('radvd: %s' % exc)

        iptables_ok = False
        if spec.router.gateway_unusable:
            # Keep the gateway's NAT as it is rather than drop it.
            LOG.error('Router %s: invalid gateway port, iptables left as they are',
                      spec.id)
        else:
            try:
                with state.iptables.defer_apply():
                    state.iptables.reset()
                    self._add_iptables_rules(state.iptables, spec)
                iptables_ok = True
            except Exception as exc:
                LOG.exception('Router %s: iptables failed', spec.id)
                failures.append('iptables: %s' % exc)

        # Deleted only once the new rules are in force: earlier, a packet of
        # an old session would just recreate its entry with the old NAT.
        self._end_stale_sessions(spec, state, removed_gw_addresses, failures,
                                 delete=iptables_ok)
        self._announce(ns, announce)

        statuses = self._fip_statuses(spec, state, gateway_ok and iptables_ok)
        if failures:
            raise RouterProcessingError(spec.id, failures, statuses)
        return statuses

    def delete_router(self, router_id: str) -> None:
        """Unplug every qr-/qg- device, then remove the namespace.

        Devices are unplugged through the interface driver first so their
        switch side (OVS port, linuxbridge tap) goes too; only then is the
        namespace deleted. If an unplug fails nothing else is removed, so a
        retry still finds the devices.
        """
        router_id = naming.validate_id(router_id, 'router')
        ns = naming.router_namespace(router_id)
        with self._lock:
            state = self._routers.get(router_id)
        devices = set(state.devices) if state else set()
        try:
            devices |= {link['name'] for link in ip_lib.list_links(ns)
                        if is_router_device(link['name'])}
        except ip_lib.NetworkNamespaceNotFound:
            pass
        failures = []
        for name in sorted(devices):
            try:
                self.interface_driver.unplug(name, ns)
            except Exception as exc:
                LOG.exception('Router %s: removing %s failed', router_id, name)
                failures.append('unplug %s: %s' % (name, exc))
        if failures:
            raise RouterProcessingError(router_id, failures)
        self.radvd.disable(router_id)
        ip_lib.delete_namespace(ns)
        try:
            os.unlink(self._iptables_record(router_id))
        except FileNotFoundError:
            pass
        with self._lock:
            self._routers.pop(router_id, None)

    def _iptables_record(self, router_id: str) -> str:
        """Where the router's applied iptables and their generation are recorded."""
        return os.path.join(self.conf.state_path, IPTABLES_RECORDS, router_id + '.json')

    # -- parts ---------------------------------------------------------------
    def _ensure_sysctls(self, spec: RouterSpec, state: _RouterState) -> None:
        ns = spec.namespace
        ports = spec.interfaces + ((spec.gateway,) if spec.gateway else ())
        has_v6 = any(ipaddress.ip_interface(c).version == 6
                     for p in ports for c in p.port.cidrs)
        wanted: dict[str | tuple[str, ...], int] = {}
        if not state.sysctls_done:
            wanted['net.ipv4.ip_forward'] = 1
            # Asymmetric paths are normal for a router (FIPs, extra routes).
            wanted['net.ipv4.conf.all.rp_filter'] = 0
            wanted['net.ipv4.conf.default.rp_filter'] = 0
        if has_v6 and not state.ipv6_forwarding:
            wanted['net.ipv6.conf.all.forwarding'] = 1
        if not wanted:
            return
        _ensure_sysctls(wanted, ns)
        state.sysctls_done = True
        state.ipv6_forwarding = state.ipv6_forwarding or has_v6

    def _ensure_port(self, ns: str, placed: PlacedPort, cidrs: list[str],
                     link: ip_lib.LinkInfo | None, have: set[str],
                     removed: set[str] | None = None) -> list[str]:
        """Plug only what is missing or different, then fix the addresses.

        :param have: the device's global addresses, read before (re-read
            here if the device is plugged anew).
        :returns: the addresses (without prefix) added to the device.
        :param removed: filled with the addresses taken off the device.
        """
        port, device = placed.port, placed.device
        if (link is None or link.get('address') != port.mac_address
                or (port.mtu is not None and link.get('mtu') != port.mtu)
                or link.get('state') != 'up'):
            # The qg- port goes on the integration bridge too (bridge=None):
            # wiring it to the provider network is the L2 agent's job.
            self.interface_driver.plug(port.network_id, port.id, device,
                                       port.mac_address, ns, mtu=port.mtu)
            if device.startswith(naming.ROUTER_GATEWAY_PREFIX):
                # The kernel announces the port's addresses itself whenever
                # it comes up or changes its MAC.
                _ensure_sysctls({('net', 'ipv4', 'conf', device, 'arp_notify'): 1}, ns)
            have = {a['cidr'] for a in
                    ip_lib.IPDevice(device, ns).addr.list(scope='global')}
        want = {str(ipaddress.ip_interface(c)) for c in cidrs}
        if have == want:
            return []
        self.interface_driver.set_addresses(device, ns, cidrs)
        if removed is not None:
            removed.update(str(ipaddress.ip_interface(c).ip) for c in have - want)
        return sorted(str(ipaddress.ip_interface(c).ip) for c in want - have)

    def _announce(self, ns: str, gained: list[tuple[str, str]]) -> None:
        """Gratuitous ARPs for IPv4 addresses a port just gained (best effort)."""
        count = int(self.conf.send_arp_for_ha)
        for device, address in gained:
            try:
                arp.announce(device, address, ns, count=count)
            except Exception as exc:
                # The address works; neighbours learn it when their cache expires.
                LOG.warning('Gratuitous ARP for %s on %s in %s not sent: %s',
                            address, device, ns, exc)

    @staticmethod
    def _end_stale_sessions(spec: RouterSpec, state: _RouterState,
                            removed_gw_addresses: set[str], failures: list[str],
                            delete: bool) -> None:
        """Delete the conntrack entries of NAT mappings that no longer hold.

        What ended is known from the addresses taken off qg- (also after an
        agent restart) and from the mappings in force before this update
        (a floating IP moved to another fixed IP keeps its address). The
        filters are kept until a deletion succeeds; ``delete`` False (the
        new rules are not in force) only remembers them.
        """
        nat_map = {f.floating_ip: f.fixed_ip for f in spec.floating_ips}
        snat_ip = spec.gateway_ipv4
        ended = {ip for ip in removed_gw_addresses
                 if ipaddress.ip_address(ip).version == 4}
        ended |= {fip for fip, fixed in state.nat_map.items() if nat_map.get(fip) != fixed}
        if state.snat_ip is not None and state.snat_ip != snat_ip:
            ended.add(state.snat_ip)
        for address in ended:
            # Sessions to it from outside (DNAT) and from inside NATed to it.
            host = ipaddress.ip_network(address)
            state.stale_flows.add(conntrack.FlowFilter(4, orig_dst=host))
            state.stale_flows.add(conntrack.FlowFilter(4, reply_dst=host))
        state.nat_map, state.snat_ip = nat_map, snat_ip
        if not state.stale_flows or not delete:
            return
        try:
            deleted = conntrack.delete_flows(state.stale_flows, spec.namespace)
        except Exception as exc:
            LOG.exception('Router %s: ending sessions of old NAT mappings failed', spec.id)
            failures.append('conntrack: %s' % exc)
            return
        LOG.info('Router %s: %d session(s) of ended NAT mappings (%s) deleted',
                 spec.id, deleted, ', '.join(sorted(
                     str(f.orig_dst or f.reply_dst) for f in state.stale_flows)))
        state.stale_flows.clear()

    def _ensure_routes(self, spec: RouterSpec, gateway_ok: bool) -> list[str]:
        """Default route(s) via the external subnet's gateway, plus extra routes.

        In a qrouter namespace every route with a next hop, except those
        learned from router advertisements, was put there by this driver
        (kernel routes have none), so the live table alone tells what to
        remove: no bookkeeping survives an agent restart wrongly.

        :returns: one failure per extra route the kernel refused (typically
            a next hop not on any router subnet yet); the others are added.
        """
        ns = spec.namespace
        # Routes the kernel learned from router advertisements (a qg- port
        # on an external network with an IPv6 router) are not ours: left
        # alone, as Neutron's agent does.
        live = [r for r in ip_lib.list_routes(ns)
                if r['gateway'] and r.get('protocol') != 'ra']
        want_default: set[tuple[str | None, str | None]] = set()
        gw = spec.gateway
        if gw is not None and gateway_ok:
            want_default = {(g, gw.device) for g in gw.port.gateways}
        elif gw is not None or spec.router.gateway_unusable:
            # The gateway failed or is unusable: leave default routes alone.
            want_default = {(r['gateway'], r['device']) for r in live
                            if r['dst'] in DEFAULT_ROUTES}
        want_extra = {(r.destination, r.nexthop) for r in spec.routes}
        for route in live:
            if route['dst'] in DEFAULT_ROUTES:
                if (route['gateway'], route['device']) not in want_default:
                    ip_lib.delete_route(route['dst'], ns, gateway=route['gateway'],
                                        device=route['device'], metric=route['metric'])
            elif (route['dst'], route['gateway']) not in want_extra:
                ip_lib.delete_route(route['dst'], ns, gateway=route['gateway'],
                                    device=route['device'], metric=route['metric'])
        live_default = {(r['gateway'], r['device']) for r in live
                        if r['dst'] in DEFAULT_ROUTES}
        if gw is not None and gateway_ok:
            networks = [ipaddress.ip_interface(c).network for c in gw.port.cidrs]
            for gateway in gw.port.gateways:
                if (gateway, gw.device) in live_default:
                    continue
                ip = ipaddress.ip_address(gateway)
                onlink = not any(ip in net for net in networks)
                ip_lib.add_route('default', ns, gateway=gateway, device=gw.device,
                                 onlink=onlink)
        live_extra = {(r['dst'], r['gateway']) for r in live}
        failures = []
        for extra in spec.routes:
            dst, nexthop = extra.destination, extra.nexthop
            if (dst, nexthop) in live_extra:
                continue
            try:
                ip_lib.add_route(dst, ns, gateway=nexthop)
            except (ip_lib.NetlinkOperationError, ValueError) as exc:
                LOG.error('Router %s: extra route %s via %s not added: %s',
                          spec.id, dst, nexthop, exc)
                failures.append('extra route %s via %s: %s' % (dst, nexthop, exc))
        return failures

    def _add_iptables_rules(self, mgr: iptables_manager.IptablesManager,
                            spec: RouterSpec) -> None:
        """The rules of a legacy router (see neutron-reference.md, qrouter)."""
        nat, mangle, filt = mgr.ipv4['nat'], mgr.ipv4['mangle'], mgr.ipv4['filter']
        port = int(self.conf.metadata_port)
        metadata = '-d %s/32 -i %s+ -p tcp -m tcp --dport 80' % (
            METADATA_IP, naming.ROUTER_INTERFACE_PREFIX)
        nat.add_rule('PREROUTING', '%s -j REDIRECT --to-ports %d' % (metadata, port))
        mangle.add_chain('mark')
        mangle.add_rule('PREROUTING', '-j $mark')
        mangle.add_rule('PREROUTING', '%s -j MARK --set-xmark %s/%s'
                        % (metadata, METADATA_ACCESS_MARK, ROUTER_MARK_MASK))
        filt.add_rule('INPUT', '-m mark --mark %s/%s -j ACCEPT'
                      % (METADATA_ACCESS_MARK, ROUTER_MARK_MASK))
        filt.add_rule('INPUT', '-p tcp -m tcp --dport %d -j DROP' % port)

        gw_ip = spec.gateway_ipv4
        if spec.gateway is None or gw_ip is None:
            return
        qg = spec.gateway.device
        if spec.router.enable_snat:
            nat.add_rule('snat', '-o %s -j SNAT --to-source %s --random-fully' % (qg, gw_ip))
        # Traffic between internal subnets (and replies to DNAT) is not NATed.
        nat.add_rule('POSTROUTING', '! -o %s -m conntrack ! --ctstate DNAT -j ACCEPT' % qg)
        # A FIP reached from inside: SNAT so replies come back through here.
        nat.add_rule('snat', '-m mark ! --mark %s/%s -m conntrack --ctstate DNAT '
                     '-j SNAT --to-source %s --random-fully'
                     % (EXTERNAL_INGRESS_MARK, ROUTER_MARK_MASK, gw_ip))
        mangle.add_rule('mark', '-i %s -j MARK --set-xmark %s/%s'
                        % (qg, EXTERNAL_INGRESS_MARK, ROUTER_MARK_MASK))
        for fip in spec.floating_ips:
            dnat = '-d %s/32 -j DNAT --to-destination %s' % (fip.floating_ip, fip.fixed_ip)
            nat.add_rule('PREROUTING', dnat)
            nat.add_rule('OUTPUT', dnat)
            nat.add_rule('float-snat', '-s %s/32 -j SNAT --to-source %s --random-fully'
                         % (fip.fixed_ip, fip.floating_ip))

    @staticmethod
    def _fip_statuses(spec: RouterSpec, state: _RouterState,
                      configured: bool) -> dict[str, str]:
        current: dict[str, tuple[str, str | None]] = {}
        ok = configured and spec.gateway_ipv4 is not None
        for fip in spec.floating_ips:
            current[fip.id] = (l3.FIP_ACTIVE if ok else l3.FIP_ERROR, fip.status)
        for fip_id, status in spec.router.unusable_floating_ips.items():
            current.setdefault(fip_id, (l3.FIP_ERROR, status))
        statuses = {fip_id: new for fip_id, (new, old) in current.items() if new != old}
        for fip_id in state.fip_ids - set(current):
            statuses[fip_id] = l3.FIP_DOWN
        state.fip_ids = set(current)
        return statuses
