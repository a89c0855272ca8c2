"""``agentkit-doctor``'s command line: options, sub-commands, exit codes.

Same configuration conventions as the agents (``--config-file`` repeatable,
``--config-dir``): give it the files the agents on this host run with, so it
knows the host name, ``state_path``, the OVSDB endpoint, the mechanism
driver and its mappings. Exit codes: 0 every hop holds, 1 a hop is broken,
2 a usage error (unknown sub-command, malformed id, bad configuration).
Sub-commands: ``port``/``network``/``router`` <id>, and ``host``. ``--probe``
adds active checks (:mod:`.probe`); without it nothing on the host changes.
Interrupted (Ctrl-C, SIGTERM, SIGHUP): 130, after the probe port was removed;
the message says whether one existed and whether its removal worked.

Import only after ``agentkit.concurrency.select()`` (it loads oslo.messaging).
"""

import logging
import sys
from typing import Any

from oslo_config import cfg

from agentkit import exceptions
from agentkit import loader
from agentkit import privsep_setup
from agentkit import version
from agentkit.api import dhcp as dhcp_api
from agentkit.api import interface as interface_api
from agentkit.api import metadata as metadata_api
from agentkit.conf import checks
from agentkit.conf import common as common_conf
from agentkit.conf import dhcp as dhcp_conf
from agentkit.conf import l2 as l2_conf
from agentkit.conf import l3 as l3_conf
from agentkit.doctor import hops
from agentkit.doctor import host as host_view
from agentkit.doctor import hosts_ovs
from agentkit.doctor import intent
from agentkit.doctor import probe as doctor_probe
from agentkit.doctor import report
from agentkit.lib import naming
from agentkit.lib import option_values
from agentkit.rpc import transport as rpc_transport

PROG = 'agentkit-doctor'
#: firewall drivers whose per-port chains the security-group hop reads
IPTABLES_FIREWALLS = frozenset({'iptables_hybrid'})
#: sub-command -> the kind of id it takes
SUBJECTS = {'port': 'port', 'network': 'network', 'router': 'router'}
#: the sub-command that takes no id
HOST = 'host'

cli_opts = [
    cfg.BoolOpt('json', default=False,
                help='Print the report as JSON (for automation).'),
    cfg.IntOpt('rpc_timeout', default=10, min=1,
               help='Seconds to wait for each read-only call to neutron-server.'),
    cfg.BoolOpt('probe', default=False,
                help='Also run active checks: a DHCP DISCOVER from a temporary probe '
                     'port on the network (removed afterwards), ARP/ping of the '
                     'gateway and a TCP connect to 169.254.169.254:80 from the qdhcp- '
                     'namespace. Changes no VM, tap or lease, but the DISCOVER, the '
                     'OFFER (for the VM\'s MAC, with the probe\'s xid, which the VM '
                     'ignores) and the ARP request are broadcast to every port of the '
                     'network, VMs\' included. Without it the doctor only reads.'),
]
#: Exit code when interrupted (Ctrl-C, SIGTERM, SIGHUP), after the probe port was
#: removed (or its removal failed: the message says which).
EXIT_INTERRUPTED = 130
#: The options the doctor reads itself (the drivers it constructs check
#: their own), checked as the agents check them at start (type, then
#: :mod:`agentkit.conf.checks`) before any is used: ``--probe`` writes into
#: OVSDB on ``[ovs] integration_bridge``.
READ_OPTIONS: tuple[tuple[str | None, str], ...] = (
    (None, 'host'), (None, 'state_path'), (None, 'rpc_timeout'),
    (None, 'interface_driver'), (None, 'dhcp_driver'), (None, 'metadata_driver'),
    (None, 'enable_metadata_proxy'), (None, 'enable_isolated_metadata'),
    ('l2', 'mechanism_driver'), ('l2', 'bridge_mappings'), ('l2', 'tunnel_types'),
    ('ovs', 'integration_bridge'), ('ovs', 'ovsdb_connection'), ('ovs', 'ovsdb_timeout'),
    ('securitygroup', 'enable_security_group'), ('securitygroup', 'firewall_driver'),
    ('securitygroup', 'unsupported_firewall_fallback'))


def _add_subjects(subparsers: Any) -> None:
    for name, kind in SUBJECTS.items():
        parser = subparsers.add_parser(name, help=f'Walk the path of a {kind}, hop by hop.')
        parser.add_argument('id', help=f'the {kind} id (a UUID)')
    subparsers.add_parser(HOST, help='agentkit\'s agents, bridges and leftover namespaces '
                                     'on this host.')


def register_opts(conf: cfg.ConfigOpts) -> None:
    common_conf.register_common_opts(conf)
    l2_conf.register_l2_opts(conf)
    l3_conf.register_l3_opts(conf)
    dhcp_conf.register_dhcp_opts(conf)  # dhcp_driver: the DHCP driver describes its servers
    conf.register_cli_opts(cli_opts)
    conf.register_cli_opt(cfg.SubCommandOpt(
        'subject', title='what to examine', handler=_add_subjects))


def _iptables_firewall(conf: cfg.ConfigOpts) -> bool:
    """Whether the L2 agent filters ports with per-port iptables chains."""
    sg_conf = conf.securitygroup
    if not sg_conf.enable_security_group:
        return False
    try:
        alias = loader.resolve(loader.FIREWALL_DRIVERS, sg_conf.firewall_driver,
                               sg_conf.unsupported_firewall_fallback)
    except exceptions.AgentkitError:
        return False    # the agent refuses to start with it: nothing to read
    return alias in IPTABLES_FIREWALLS


def option_problems(conf: cfg.ConfigOpts) -> list[str]:
    """What is wrong with the :data:`READ_OPTIONS`, one line per option."""
    return [problem for group, name in READ_OPTIONS
            if (problem := checks.option_problem(conf, group, name)) is not None]


def _settings(conf: cfg.ConfigOpts) -> hops.Settings:
    """What the hops judge by; the options were checked (:func:`option_problems`)."""
    mappings = option_values.parse_mappings(conf.l2.bridge_mappings, 'bridge_mappings',
                                            'bridge')
    return hops.Settings(host=conf.host, mechanism=conf.l2.mechanism_driver,
                         integration_bridge=conf.ovs.integration_bridge,
                         physical_networks=frozenset(mappings),
                         physical_bridges=frozenset(mappings.values()),
                         tunnel_types=frozenset(conf.l2.tunnel_types),
                         metadata_proxy=conf.enable_metadata_proxy,
                         iptables_firewall=_iptables_firewall(conf),
                         probe=conf.probe,
                         isolated_metadata=conf.enable_isolated_metadata)


ServiceDrivers = tuple[dhcp_api.DhcpDriver, metadata_api.MetadataDriver]


def _service_drivers(conf: cfg.ConfigOpts) -> ServiceDrivers:
    """The configured DHCP and metadata drivers, which describe what they run
    (constructed only: nothing is started, nothing on the host changes)."""
    interface = loader.load_driver(loader.INTERFACE_DRIVERS, conf.interface_driver,
                                   interface_api.InterfaceDriver, conf=conf, host=conf.host)
    dhcp = loader.load_driver(loader.DHCP_DRIVERS, conf.dhcp_driver, dhcp_api.DhcpDriver,
                              conf=conf, host=conf.host, interface_driver=interface)
    metadata = loader.load_driver(loader.METADATA_DRIVERS, conf.metadata_driver,
                                  metadata_api.MetadataDriver, conf=conf, host=conf.host)
    return dhcp, metadata


def examine(conf: cfg.ConfigOpts, kind: str, resource_id: str) -> report.Report:
    """Ask the server, read the host, judge the hops (needs root for netlink)."""
    settings = _settings(conf)
    dhcp, metadata = _service_drivers(conf)  # a bad driver name fails before any connection
    ovs = (hosts_ovs.OvsView(conf.ovs.ovsdb_connection, conf.ovs.ovsdb_timeout)
           if settings.mechanism == hops.OPENVSWITCH else None)
    prober = (doctor_probe.Prober(ovs, settings.integration_bridge) if settings.probe
              else None)
    host = host_view.HostView(ovs, dhcp, metadata, conf.state_path, prober)
    transport = rpc_transport.get_transport(conf)
    try:
        server = intent.ServerView(transport, conf.host, timeout=conf.rpc_timeout)
        if kind == HOST:
            return hops.check_host(server, host, settings)
        check = {'port': hops.check_port, 'network': hops.check_network,
                 'router': hops.check_router}[kind]
        return check(resource_id, server, host, settings)
    except KeyboardInterrupt:
        if prober is None:
            raise
        raise doctor_probe.Interrupted(prober.outcome()) from None
    finally:
        transport.cleanup()


def run(argv: list[str], conf: cfg.ConfigOpts | None = None) -> int:
    # oslo.messaging registers its options on the global cfg.CONF only.
    conf = cfg.CONF if conf is None else conf
    register_opts(conf)
    try:
        conf(argv, project='agentkit', prog=PROG,
             version=version.version_info.version_string(), default_config_files=[])
    except SystemExit as exc:   # argparse: --help (0) or a usage error (2)
        return report.EXIT_USAGE if exc.code else report.EXIT_OK
    except cfg.Error as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return report.EXIT_USAGE
    kind = conf.subject.name
    if kind == HOST:
        resource_id = ''
    elif kind not in SUBJECTS:
        print(f'{PROG}: name what to examine: {HOST}, or {" or ".join(SUBJECTS)} <id>',
              file=sys.stderr)
        return report.EXIT_USAGE
    else:
        try:
            resource_id = naming.validate_id(conf.subject.id, SUBJECTS[kind])
        except exceptions.InvalidIdentifier as exc:
            print(f'{PROG}: {exc}', file=sys.stderr)
            return report.EXIT_USAGE
    problems = option_problems(conf)
    if problems:    # nothing read, nothing changed on the host yet
        for problem in problems:
            print(f'{PROG}: {problem}', file=sys.stderr)
        return report.EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    privsep_setup.setup_privsep(conf)
    if conf.probe:
        doctor_probe.prepare_interrupts()
    try:
        result = examine(conf, kind, resource_id)
    except (exceptions.DriverNotFound, exceptions.DriverLoadError,
            exceptions.InvalidConfiguration) as exc:
        # The configuration names a driver that cannot describe the host.
        print(f'{PROG}: {exc}', file=sys.stderr)
        return report.EXIT_USAGE
    except doctor_probe.Interrupted as exc:
        print(f'{PROG}: interrupted; {exc.outcome}', file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:   # before any probe could start
        print(f'{PROG}: interrupted' + ('; no probe port had been created' if conf.probe
                                        else ''), file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.to_json() if conf.json else result.to_text())
    return result.exit_code
