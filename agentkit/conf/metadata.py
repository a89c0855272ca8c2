"""Options of the metadata agent.

Names, types and defaults follow neutron-metadata-agent's
(neutron/conf/agent/metadata/config.py) so a Neutron ``metadata_agent.ini``
works unchanged; where agentkit differs (defaults that let an unprivileged
proxy connect, bounded timeouts, the lookup cache) the help says so.
"""

import os

from oslo_config import cfg

from agentkit.conf import metadata_proxy

METADATA_GROUP = 'metadata'

DEDUCE_MODE = 'deduce'
USER_MODE = 'user'
GROUP_MODE = 'group'
ALL_MODE = 'all'
SOCKET_MODES = (DEDUCE_MODE, USER_MODE, GROUP_MODE, ALL_MODE)

#: Options Neutron shares between the metadata agent and the agents that run
#: the per-namespace proxies (its SHARED_OPTS: metadata_proxy_socket,
#: metadata_proxy_user, metadata_proxy_group): the proxies connect to the
#: socket as that user/group. Defined once, with the proxies' options; the
#: very same objects are registered here (oslo.config accepts a second
#: registration of a name only from an equal option).
shared_opts = metadata_proxy.shared_opts

nova_opts = [
    cfg.HostAddressOpt(
        'nova_metadata_host', default='127.0.0.1',
        deprecated_name='nova_metadata_ip',
        help='IP address or DNS name of the Nova metadata API. The old '
             'Neutron spelling nova_metadata_ip is still accepted.'),
    cfg.PortOpt(
        'nova_metadata_port', default=8775,
        help='TCP port of the Nova metadata API.'),
    cfg.StrOpt(
        'nova_metadata_protocol', default='http', choices=['http', 'https'],
        help='Protocol to reach the Nova metadata API.'),
    cfg.BoolOpt(
        'nova_metadata_insecure', default=False,
        help='With https: do not verify Nova\'s certificate.'),
    cfg.StrOpt(
        'auth_ca_cert',
        help='CA certificate file to verify Nova\'s certificate with (https); '
             'unset: the system\'s CAs.'),
    cfg.StrOpt(
        'nova_client_cert', default='',
        help='Client certificate file presented to Nova (https); used only '
             'together with nova_client_priv_key.'),
    cfg.StrOpt(
        'nova_client_priv_key', default='',
        help='Private key file of nova_client_cert.'),
    cfg.StrOpt(
        'metadata_proxy_shared_secret', default='', secret=True, mutable=True,
        help='Secret shared with Nova ([neutron] metadata_proxy_shared_secret '
             'there): the agent signs each instance id with it '
             '(X-Instance-ID-Signature, HMAC-SHA256) so Nova can trust the '
             'id. Never logged.'),
    cfg.FloatOpt(
        'nova_metadata_timeout', default=1.5, min=0.1, mutable=True,
        help='Seconds a request may spend on Nova (connect, send, response '
             'and body together) before the VM gets HTTP 503. agentkit-only '
             '(Neutron waits 60 s): a VM retries, a stuck agent thread does not '
             'help it. Raise it for slow dynamic vendordata.'),
]

server_opts = [
    cfg.StrOpt(
        'metadata_proxy_socket_mode', default=DEDUCE_MODE,
        choices=[(DEDUCE_MODE, 'from metadata_proxy_user/group, see below'),
                 (USER_MODE, '0644: only the agent\'s user (or root) may connect'),
                 (GROUP_MODE, '0664: the socket\'s group may connect too'),
                 (ALL_MODE, '0666: every local user may connect')],
        help='Permissions of metadata_proxy_socket (connecting needs write '
             'permission). "deduce" picks "user" when metadata_proxy_user is '
             'empty, root or the agent\'s user; otherwise "group" when '
             'metadata_proxy_group is empty or the agent\'s group, or when the '
             'agent runs as root and can give the socket that group (agentkit '
             'does; Neutron would fall through); otherwise "all". With the '
             'defaults and a root agent: group nogroup, 0664.'),
    cfg.IntOpt(
        'metadata_workers', min=0, sample_default='max(16, 4 x CPUs)',
        help='Requests served at the same time (threads of the unix-socket '
             'server). More connections wait in the socket\'s backlog until a '
             'thread is free, so a flood cannot create unbounded threads. 0 '
             'serves one request at a time (Neutron\'s "in the main thread"). '
             'Unset: max(16, 4 x CPUs): the threads mostly wait on '
             'neutron-server and Nova, unlike Neutron\'s CPUs / 2 processes.'),
    cfg.IntOpt(
        'metadata_backlog', default=4096, min=1,
        help='listen() backlog of the unix socket: connections the kernel '
             'queues while every worker is busy (capped by '
             'net.core.somaxconn). When it is full the proxy\'s connect fails '
             'at once instead of waiting.'),
    cfg.IntOpt(
        'metadata_cache_ttl', default=5, min=0, mutable=True,
        help='Seconds a (router or network, source IP) -> instance lookup and '
             'a router\'s networks are remembered, and identical lookups in '
             'flight share one RPC, so the burst of requests a booting VM '
             '(cloud-init) sends costs one lookup instead of one per request. '
             'Misses are never kept. A port deleted and its address reused '
             'within this time can still be answered for the old instance. 0: '
             'every request asks neutron-server. agentkit-only; Neutron\'s old '
             'cache_url defaulted to 5 s too.'),
    cfg.IntOpt(
        'metadata_rpc_timeout', default=5, min=1, mutable=True,
        help='Seconds a port lookup RPC to neutron-server may take before the '
             'request fails with HTTP 503 (agentkit-only; the agent\'s other '
             'RPCs keep their own timeouts).'),
]

metadata_opts = shared_opts + nova_opts + server_opts


def register_metadata_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(metadata_opts)


def default_workers() -> int:
    """The ``metadata_workers`` used when the option is unset."""
    return max(16, 4 * (os.cpu_count() or 1))
