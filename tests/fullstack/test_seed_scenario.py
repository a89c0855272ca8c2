"""The seed scenario under the real neutron-server 29, for each mechanism.

openvswitch (hybrid plug, ``iptables_hybrid``) and linuxbridge (bound by
``agentkit_linuxbridge`` on the server, flat + vxlan) run the same scenario
through the REST API: a tenant network with DHCP, two VMs in the default
security group (lease, VM<->VM, VM->router), metadata on the isolated
network and through the router (a stand-in Nova checks the signature),
security-group rules added and removed through the API (sessions cut), a
router with SNAT out and a floating IP in (GARP on a move, sessions cut on
disassociation), IPv6 SLAAC, every agent restarted under traffic (no
dnsmasq respawned, no router rule changed, no ping lost), and a teardown
through the API after which the host holds nothing of the test.
"""

import os
import random
import signal
import time
import uuid

from agentkit.lib import ip_lib
from agentkit.lib import naming
from tests.fullstack import base
from tests.fullstack.base import (EVENT_TIMEOUT, METADATA_URL, PHYSNET,
                                  NetfilterSnapshots, namespace_addresses, wait_until)
from tests.functional import fake_nova
from tests.functional import traffic
from tests.functional import vm as fake_vm


class SeedScenario:
    """The scenario; the host class (mechanism) it is mixed with plugs the VMs."""

    # -- the scenario ---------------------------------------------------------------
    def run_scenario(self):
        t0 = time.monotonic()
        self.start_agent('l2', {
            **self.l2_sections(),
            'securitygroup': {'firewall_driver': 'iptables_hybrid'},
        })
        self.start_agent('dhcp', {
            'DEFAULT': {'interface_driver': self.interface_driver, 'dhcp_driver': 'dnsmasq',
                        'check_child_processes_interval': 1,
                        'enable_isolated_metadata': True},
        })
        self.start_agent('l3', {
            'DEFAULT': {'interface_driver': self.interface_driver, 'l3_driver': 'namespace',
                        'check_child_processes_interval': 1},
        })
        secret = uuid.uuid4().hex
        nova = fake_nova.FakeNova(secret).start()
        self.addCleanup(nova.stop)
        self.start_agent('metadata', {
            'DEFAULT': {'nova_metadata_host': '127.0.0.1', 'nova_metadata_port': nova.port,
                        'metadata_proxy_shared_secret': secret},
        })
        agents = self.wait_agents_alive([self.agent_type, 'DHCP agent', 'L3 agent',
                                         'Metadata agent'])
        self.timings['agent start -> all alive in GET /v2.0/agents'] = time.monotonic() - t0
        self.assertEqual('agentkit-l2', agents[self.agent_type]['binary'])
        self.assertEqual('agentkit-dhcp', agents['DHCP agent']['binary'])
        self.assertEqual('agentkit-l3', agents['L3 agent']['binary'])
        self.assertEqual(['vxlan'], agents[self.agent_type]['configurations']['tunnel_types'])

        # -- a tenant network with DHCP: scheduled to agentkit-dhcp ----------
        net = self.create_network()
        self.assertEqual('vxlan', net['provider:network_type'])
        cidr_net = f'10.{random.randint(100, 250)}.{random.randint(0, 255)}'
        t_subnet = time.monotonic()
        subnet = self.api.create_subnet(network_id=net['id'], cidr=f'{cidr_net}.0/24',
                                        enable_dhcp=True, name=f'{self.prefix}-sub')
        self.timings['subnet POST (API)'] = time.monotonic() - t_subnet
        hosting = wait_until(lambda: self.api.dhcp_agents_hosting(net['id']), 30,
                             'the network scheduled to a DHCP agent')
        self.assertEqual([self.host], [a['host'] for a in hosting])
        ns = f'qdhcp-{net["id"]}'

        def dhcp_served():
            if not self.dnsmasq_pid(net['id']):
                return None
            addrs = namespace_addresses(ns)
            return next((dev for dev, cidrs in addrs.items()
                         if any(c.startswith(cidr_net + '.') for c in cidrs)), None)
        dhcp_dev = self.timed('subnet POST -> dnsmasq up, port with IP in qdhcp-',
                              t_subnet, dhcp_served, EVENT_TIMEOUT, f'dnsmasq and port in {ns}')
        dhcp_ports = self.api.list_ports(network_id=net['id'], device_owner='network:dhcp')
        self.assertEqual(1, len(dhcp_ports))
        dhcp_port = dhcp_ports[0]
        self.assertEqual(dhcp_port['id'][:11], dhcp_dev[-11:])
        self.assertEqual(self.host, dhcp_port['binding:host_id'])
        dhcp_ip = dhcp_port['fixed_ips'][0]['ip_address']
        self.timed('subnet POST -> DHCP port ACTIVE', t_subnet,
                   lambda: self.port_status(dhcp_port['id'], 'ACTIVE'),
                   EVENT_TIMEOUT, 'the DHCP port ACTIVE (wired by agentkit-l2)')

        # -- two VMs in the project's default security group ---------------------
        vm1, port1 = self.add_vm(net, 'vm1')
        vm2, port2 = self.add_vm(net, 'vm2')
        default_sg = port1['security_groups']
        self.assertEqual(1, len(default_sg), 'the port is in the default group')
        vm1_ip = port1['fixed_ips'][0]['ip_address']
        vm2_ip = port2['fixed_ips'][0]['ip_address']
        t_dhcp = time.monotonic()
        lease = fake_vm.DhcpClient(vm1, self.get_temp_dir()).request(timeout=20)
        self.timings['dhclient -> lease (through the firewall)'] = time.monotonic() - t_dhcp
        self.assertIsNotNone(lease, 'the VM got no DHCP lease')
        self.assertEqual(vm1_ip, lease['new_ip_address'])
        self.assertEqual(subnet['gateway_ip'], lease.get('new_routers'))
        self.assertEqual(str(net['mtu']), lease.get('new_interface_mtu'))
        vm1.set_ip(f'{vm1_ip}/24')
        vm2.set_ip(f'{vm2_ip}/24')
        # -- metadata on the isolated network: the DHCP namespace's proxy ------
        for vm, port in ((vm1, port1), (vm2, port2)):
            nova.instances[port['device_id']] = port['project_id']
        self.assertIn(f'169.254.169.254/32,{dhcp_ip}',
                      self.classless_routes(lease), 'no metadata route via the DHCP port')
        self.route_metadata(vm1, dhcp_ip)
        t_md = time.monotonic()
        self.assertEqual(port1['device_id'], self.instance_id(vm1))
        self.timings['metadata GET (isolated network, first)'] = time.monotonic() - t_md
        self.assertTrue(self.proxy_pid(net['id']), 'no metadata proxy for the network')
        # The filter is in force: the port has chains with the group's rules.
        chain = self.firewall_chain('i', port1['id'])
        self.assertIn('--match-set', chain, 'no rule of the default group on the port')
        # The default group lets its members in (and everything out).
        self.assertTrue(self.reaches(vm1.name, vm2_ip), 'VM1 cannot reach VM2')
        self.assertTrue(self.reaches(vm2.name, vm1_ip), 'VM2 cannot reach VM1')
        # The DHCP port is not a member: its namespace stands for a host
        # outside the group, which the closed default keeps out.
        self.assertTrue(fake_vm.ping(vm1.name, dhcp_ip), 'VM cannot reach the DHCP port')
        self.assertFalse(fake_vm.ping(ns, vm1_ip, count=2, wait=1),
                         'a host outside the group pings the VM')
        echo = traffic.EchoServer(vm1.name, 5001)
        self.addCleanup(echo.stop)
        self.assertTrue(traffic.tcp_connects(vm2.name, vm1_ip, 5001), 'member cannot connect')
        self.assertFalse(traffic.tcp_connects(ns, vm1_ip, 5001), 'outsider connects')

        # -- a rule added through the API opens the port ------------------------
        t_rule = time.monotonic()
        rule = self.api.create_security_group_rule(
            security_group_id=default_sg[0], direction='ingress', ethertype='IPv4',
            protocol='tcp', port_range_min=5001, port_range_max=5001,
            remote_ip_prefix='0.0.0.0/0')
        opened = traffic.wait_tcp_connects(ns, vm1_ip, 5001, EVENT_TIMEOUT)
        self.assertIsNotNone(opened, 'the port stayed closed after the rule was added')
        self.timings['rule POST -> TCP port open'] = time.monotonic() - t_rule
        self.assertFalse(fake_vm.ping(ns, vm1_ip, count=1, wait=1), 'ICMP opened too')

        # -- removing it cuts the session it let in --------------------------------
        session = traffic.TcpSession(ns, vm1_ip, 5001)
        self.addCleanup(session.close)
        self.assertTrue(session.connected, session.state)
        self.assertEqual('ok', session.exchange())
        t_rule = time.monotonic()
        self.api.delete('security-group-rules', rule['id'], missing_ok=False)

        def session_cut():
            return session.exchange() != 'ok'
        self.timed('rule DELETE -> established session cut', t_rule, session_cut,
                   EVENT_TIMEOUT, 'the established session to stop')
        self.assertFalse(traffic.tcp_connects(ns, vm1_ip, 5001), 'port still open')
        # Members are not affected by the outsider's rule going.
        self.assertTrue(traffic.tcp_connects(vm2.name, vm1_ip, 5001))

        # -- a router: interface on the tenant subnet, gateway on a flat net --
        ext = self.create_network(**{'router:external': True,
                                     'provider:network_type': 'flat',
                                     'provider:physical_network': PHYSNET})
        self.ext_network_id = ext['id']
        ext_cidr = f'172.31.{random.randint(0, 255)}'
        self.api.create_subnet(network_id=ext['id'], cidr=f'{ext_cidr}.0/24',
                               enable_dhcp=False, gateway_ip=f'{ext_cidr}.1',
                               name=f'{self.prefix}-extsub')
        t_router = time.monotonic()
        router = self.api.create_router(name=f'{self.prefix}-r',
                                        external_gateway_info={'network_id': ext['id']})
        self.addCleanup(self.cleanup_router, router['id'])
        self.api.add_router_interface(router['id'], subnet['id'])
        rns = naming.router_namespace(router['id'])

        def router_ready():
            addrs = namespace_addresses(rns)
            qr = [c for d, cs in addrs.items() if d.startswith('qr-') for c in cs]
            qg = [c for d, cs in addrs.items() if d.startswith('qg-') for c in cs]
            if f'{subnet["gateway_ip"]}/24' in qr and any(
                    c.startswith(ext_cidr + '.') for c in qg):
                return addrs
            return None
        self.timed('router POST -> qrouter- with qr-/qg- addresses', t_router,
                   router_ready, EVENT_TIMEOUT, f'{rns} with qr- and qg-')
        self.assertEqual([self.host],
                         [a['host'] for a in self.api.l3_agents_hosting(router['id'])])
        router_ports = self.api.list_ports(device_id=router['id'])
        self.assertEqual(2, len(router_ports))

        def router_ports_active():
            return all(self.api.show_port(p['id'])['status'] == 'ACTIVE'
                       for p in router_ports)
        self.timed('router POST -> both router ports ACTIVE', t_router,
                   router_ports_active, EVENT_TIMEOUT, 'router ports ACTIVE')
        self.assertTrue(self.reaches(vm1.name, subnet['gateway_ip']),
                        'VM1 cannot reach its router')
        self.assertTrue(self.reaches(vm2.name, subnet['gateway_ip']),
                        'VM2 cannot reach its router')
        # -- metadata through the router's proxy ------------------------------
        router_proxy = self.timed('router POST -> metadata proxy in qrouter-', t_router,
                                  lambda: self.proxy_pid(router['id']), EVENT_TIMEOUT,
                                  'the router\'s metadata proxy')
        # With a router the network is no longer isolated: its proxy goes.
        wait_until(lambda: not self.proxy_pid(net['id']), EVENT_TIMEOUT,
                   'the network\'s metadata proxy removed')
        self.route_metadata(vm2, subnet['gateway_ip'])
        self.assertEqual(port2['device_id'], self.instance_id(vm2))
        signed = nova.requests_for(port2['device_id'])[-1]
        self.assertEqual(vm2_ip, signed['headers'].get('X-Forwarded-For'))
        # A VM claiming to be another instance still gets only its own data.
        forged = {'X-Instance-ID': port1['device_id'], 'X-Tenant-ID': port1['project_id'],
                  'X-Forwarded-For': vm1_ip, 'X-Neutron-Network-ID': net['id']}
        status, body = traffic.http_get(
            vm2.name, METADATA_URL + '/latest/meta-data/instance-id', headers=forged)
        self.assertEqual((200, port2['device_id']), (status, body.strip()))

        # -- the router's data plane: SNAT, floating IP, sessions, GARP ----------
        upstream, fip = self.check_router_data_plane(
            router, subnet, ext_cidr, (vm1, port1), (vm2, port2), default_sg[0])
        # -- IPv6: a SLAAC subnet behind the router (radvd) ----------------------
        v6_subnet = self.check_ipv6_slaac(router, net, vm1, port1)

        # -- restart all agents under traffic through SNAT and the floating IP ---
        chains_before = self.firewall_rules()
        dnsmasq_before = self.dnsmasq_pid(net['id'])
        self.assertIsNotNone(dnsmasq_before)
        pings = [traffic.ContinuousPing(vm1.name, f'{ext_cidr}.1'),
                 traffic.ContinuousPing(upstream, fip['floating_ip_address'])]
        for ping in pings:
            self.addCleanup(ping.proc.kill)
        snapshots = NetfilterSnapshots(rns)
        self.addCleanup(snapshots.stop)
        t_restart = time.monotonic()
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.agents[name].signal(signal.SIGTERM)
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.assertEqual(0, self.agents[name].wait(20), f'agentkit-{name} exit code')
        self.timings['SIGTERM -> all three agents exited'] = time.monotonic() - t_restart
        # The host kept serving, and filtering, while the agents were down.
        self.assertTrue(fake_vm.ping(vm1.name, subnet['gateway_ip']))
        self.assertFalse(traffic.tcp_connects(ns, vm1_ip, 5001))
        # Metadata requests fail fast while the metadata agent is down.
        t_md = time.monotonic()
        status, _ = traffic.http_get(vm2.name, METADATA_URL, timeout=5)
        self.assertNotEqual(200, status)
        self.assertLess(time.monotonic() - t_md, 3.0, 'a metadata request hung')
        t_restart = time.monotonic()
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.start_agent(name)
        for name in ('l2', 'dhcp', 'l3', 'metadata'):
            self.agents[name].wait_for_output('Full sync (agent start) done', 60)
        self.timings['agents restarted -> all three full syncs done'] = (
            time.monotonic() - t_restart)
        # The restarted DHCP agent adopted the running dnsmasq (as Neutron's
        # does not: it respawns every one).
        self.assertEqual(dnsmasq_before, self.dnsmasq_pid(net['id']),
                         'the DHCP agent restart respawned dnsmasq')
        self.assertIn(f'{dhcp_ip}/24', namespace_addresses(ns)[dhcp_dev])
        self.assertIsNotNone(router_ready(), f'{rns} after the L3 agent restart')
        # The resync asks for every port's details again (the server marks
        # them BUILD meanwhile, as with Neutron's agents) and reports them up.
        for port_id in [port1['id'], port2['id'], dhcp_port['id']] + [
                p['id'] for p in router_ports]:
            wait_until(lambda p=port_id: self.port_status(p, 'ACTIVE'), EVENT_TIMEOUT,
                       f'port {port_id} ACTIVE again after the restart')
        self.assertEqual(chains_before, self.firewall_rules(),
                         'the restart changed the firewall rules')
        lease = fake_vm.DhcpClient(vm1, self.get_temp_dir()).request(timeout=20)
        self.assertIsNotNone(lease, 'no DHCP lease after the agents restarted')
        self.assertEqual(vm1_ip, lease['new_ip_address'])
        self.assertTrue(fake_vm.ping(vm1.name, subnet['gateway_ip']),
                        'VM cannot reach its router after the agents restarted')
        self.assertTrue(fake_vm.ping(vm1.name, vm2_ip))
        self.assertEqual(router_proxy, self.proxy_pid(router['id']),
                         'the router\'s metadata proxy was restarted')
        t_md = time.monotonic()
        # Within the event bound: the four agents' first full syncs load the
        # server at once, and a busy CI host stretches them.
        self.assertEqual(port2['device_id'], wait_until(
            lambda: self.instance_id(vm2, check=False), EVENT_TIMEOUT,
            'metadata after the restart'))
        self.timings['metadata GET after the restart'] = time.monotonic() - t_md
        time.sleep(2)  # the restarted L3 agent's first updates are in
        taken = snapshots.stop()
        for ping, what in zip(pings, ('VM -> upstream (SNAT)', 'upstream -> floating IP')):
            sent, received = ping.stop()
            self.timings[f'restart: {what} pings sent/lost'] = f'{sent}/{sent - received}'
            self.assertGreater(sent, 20, what)
            self.assertEqual(sent, received, f'{what}: pings lost during the restart')
        self.assertGreater(taken, 10, 'too few snapshots of the router\'s rules')
        self.assertEqual([], snapshots.changes,
                         'the restart changed the router\'s iptables/nft rules')

        # -- teardown through the API: the host follows ------------------------
        self.api.delete('floatingips', fip['id'], missing_ok=False)
        self.api.remove_router_interface(router['id'], v6_subnet['id'])
        t_del = time.monotonic()
        self.api.remove_router_interface(router['id'], subnet['id'])
        self.api.delete('routers', router['id'], missing_ok=False)
        self.timed('router DELETE -> qrouter- gone', t_del,
                   lambda: not ip_lib.IPWrapper(rns).namespace_exists(),
                   EVENT_TIMEOUT, f'{rns} removed')
        self.assertIsNone(self.proxy_pid(router['id']), 'the router\'s proxy is left')
        self.assertEqual([], self.daemon_pids('radvd'), 'radvd is left')
        for vm, port in ((vm1, port1), (vm2, port2)):
            self.unplug(vm)  # nova unplugs, then deletes the port
            vm.destroy()
            self.api.delete('ports', port['id'], missing_ok=False)
        wait_until(lambda: port1['id'][:10] not in self.firewall_rules(), EVENT_TIMEOUT,
                   'the unplugged VM\'s chains removed')
        dnsmasq = self.dnsmasq_pid(net['id'])
        t_del = time.monotonic()
        self.api.delete('networks', net['id'], missing_ok=False)
        self.timed('network DELETE -> qdhcp- and dnsmasq gone', t_del,
                   lambda: (not ip_lib.IPWrapper(ns).namespace_exists()
                            and not os.path.exists(f'/proc/{dnsmasq}')),
                   EVENT_TIMEOUT, f'{ns} and dnsmasq {dnsmasq} removed')
        self.assertFalse(ip_lib.device_exists('tap' + dhcp_port['id'][:11]),
                         'the DHCP port\'s device left on the host')
        for name, proc in self.agents.items():
            self.assertIsNone(proc.proc.poll(), f'agentkit-{name} exited')
        self.wait_agents_alive([self.agent_type, 'DHCP agent', 'L3 agent'])
        self.api.delete('networks', ext['id'], missing_ok=False)
        self.assert_host_clean(
            [net['id'], ext['id'], router['id'], default_sg[0], fip['id']]
            + [p['id'] for p in [port1, port2, dhcp_port, *router_ports]])
        if self.mechanism == 'linuxbridge':
            self.assertFalse(ip_lib.device_exists(f'vxlan-{net["provider:segmentation_id"]}'),
                             'the network\'s vxlan device is left')
        self.report_timings()
        self.assert_logs_clean()

    # -- the router's data plane ------------------------------------------------------
    def check_router_data_plane(self, router, subnet, ext_cidr, first, second, group_id):
        """SNAT out, floating IP in, sessions cut on disassociation, GARP on association."""
        (vm1, port1), (vm2, port2) = first, second
        upstream = self.add_upstream(ext_cidr)
        gw_ip = self.api.show_router(router['id'])['external_gateway_info'][
            'external_fixed_ips'][0]['ip_address']
        for vm in (vm1, vm2):
            ip_lib.IPDevice('eth0', vm.name).route.add_gateway(subnet['gateway_ip'])
        # The upstream side may reach the VMs (the default group keeps it out).
        self.api.create_security_group_rule(
            security_group_id=group_id, direction='ingress', ethertype='IPv4',
            remote_ip_prefix=f'{ext_cidr}.0/24')
        t_snat = time.monotonic()
        self.assertTrue(self.reaches(vm1.name, f'{ext_cidr}.1', timeout=EVENT_TIMEOUT),
                        'VM cannot reach the upstream router through SNAT')
        self.timings['VM -> upstream through SNAT (first ping)'] = time.monotonic() - t_snat
        reporter = traffic.PeerReporter(upstream, 5005)
        self.addCleanup(reporter.stop)
        self.assertEqual(gw_ip, traffic.peer_seen(vm1.name, f'{ext_cidr}.1', 5005),
                         'the upstream side did not see the router\'s gateway IP')

        # A floating IP for VM1: reachable from upstream, which it sees as itself.
        echo = traffic.EchoServer(vm1.name, 5002)
        self.addCleanup(echo.stop)
        in_vm = traffic.PeerReporter(vm1.name, 5006)
        self.addCleanup(in_vm.stop)
        t_fip = time.monotonic()
        fip = self.api.create_floatingip(floating_network_id=self.ext_network_id,
                                         port_id=port1['id'])
        self.addCleanup(self.api.delete, 'floatingips', fip['id'])
        address = fip['floating_ip_address']
        self.timed('floating IP POST -> upstream pings it', t_fip,
                   lambda: fake_vm.ping(upstream, address, count=1, wait=1),
                   EVENT_TIMEOUT, f'{address} reachable from upstream')
        self.timed('floating IP POST -> status ACTIVE', t_fip,
                   lambda: self.api.show_floatingip(fip['id'])['status'] == 'ACTIVE',
                   EVENT_TIMEOUT, 'the floating IP ACTIVE')
        self.assertEqual(f'{ext_cidr}.1', traffic.peer_seen(upstream, address, 5006),
                         'the VM did not see the upstream address')
        self.assertEqual(address, traffic.peer_seen(vm1.name, f'{ext_cidr}.1', 5005),
                         'the VM\'s own connections do not leave with its floating IP')

        # Disassociating it cuts the sessions running through it.
        session = traffic.TcpSession(upstream, address, 5002)
        self.addCleanup(session.close)
        self.assertEqual(('connected', 'ok'), (session.state, session.exchange()))
        t_cut = time.monotonic()
        self.api.update_floatingip(fip['id'], port_id=None)
        self.timed('floating IP disassociated -> running session cut', t_cut,
                   lambda: session.exchange() != 'ok', EVENT_TIMEOUT,
                   'the session through the floating IP to stop')
        self.assertFalse(fake_vm.ping(upstream, address, count=1, wait=1))

        # Associated to VM2: announced at once with gratuitous ARPs.
        sniffer = traffic.ArpSniffer(upstream)
        self.addCleanup(sniffer.stop)
        t_garp = time.monotonic()
        self.api.update_floatingip(fip['id'], port_id=port2['id'])
        qg_mac = next(p for p in self.api.list_ports(device_id=router['id'])
                      if p['device_owner'] == 'network:router_gateway')['mac_address']
        self.timed('floating IP moved -> gratuitous ARP upstream', t_garp,
                   lambda: qg_mac in sniffer.gratuitous(address), EVENT_TIMEOUT,
                   f'a gratuitous ARP for {address} from {qg_mac}')
        in_vm2 = traffic.PeerReporter(vm2.name, 5006)
        self.addCleanup(in_vm2.stop)
        self.assertTrue(self.reaches(upstream, address, timeout=EVENT_TIMEOUT))
        self.assertEqual(f'{ext_cidr}.1', traffic.peer_seen(upstream, address, 5006))
        return upstream, self.api.show_floatingip(fip['id'])

    def check_ipv6_slaac(self, router, net, vm, port):
        """A SLAAC subnet on the router: the VM autoconfigures and pings the router."""
        prefix = 'fd%02x:%x:%x::' % (
            random.randint(0, 255), random.randint(1, 0xffff), random.randint(1, 0xffff))
        t_v6 = time.monotonic()
        v6 = self.api.create_subnet(network_id=net['id'], ip_version=6, cidr=prefix + '/64',
                                    ipv6_ra_mode='slaac', ipv6_address_mode='slaac',
                                    name=f'{self.prefix}-v6')
        self.api.add_router_interface(router['id'], v6['id'])
        expected = next(ip['ip_address'] for ip in self.api.show_port(port['id'])['fixed_ips']
                        if ip['subnet_id'] == v6['id'])

        def autoconfigured():
            return any(a['cidr'] == f'{expected}/64' for a in
                       ip_lib.IPDevice('eth0', vm.name).addr.list(scope='global'))
        self.timed('IPv6 SLAAC subnet on the router -> VM autoconfigured from the RA', t_v6,
                   autoconfigured, EVENT_TIMEOUT, f'{expected} on the VM (SLAAC)')
        # (radvd forks a privileged helper: two processes with the same argv)
        self.assertTrue(self.daemon_pids('radvd'), 'no radvd for the router')
        self.assertTrue(self.reaches(vm.name, v6['gateway_ip'], timeout=EVENT_TIMEOUT),
                        'the VM cannot ping the router\'s IPv6 address')
        return v6


class OpenvswitchSeedScenarioTest(SeedScenario, base.OpenvswitchHost):

    def test_seed_scenario(self):
        self.run_scenario()


class LinuxbridgeSeedScenarioTest(SeedScenario, base.LinuxbridgeHost):

    def test_seed_scenario(self):
        self.run_scenario()
