"""Options every agentkit agent shares."""

import socket

from oslo_config import cfg

CONCURRENCY_THREADING = 'threading'
CONCURRENCY_EVENTLET = 'eventlet'

core_opts = [
    cfg.HostAddressOpt(
        'host', default=socket.gethostname(), sample_default='<hostname>',
        help='Name of this host as neutron-server knows it (binding:host_id '
             'of the ports bound here). Used in per-host RPC topics.'),
    cfg.StrOpt(
        'state_path', default='/var/lib/agentkit',
        help='Directory for agent state (dnsmasq files, pid files, sockets). '
             'Must be traversable by unprivileged users because dnsmasq '
             'reads its files after dropping to "nobody".'),
    cfg.StrOpt(
        'concurrency_mode', default=CONCURRENCY_THREADING,
        choices=[(CONCURRENCY_THREADING,
                  'Native threads (default; OpenStack is retiring eventlet).'),
                 (CONCURRENCY_EVENTLET,
                  'eventlet green threads; compatibility mode only, '
                  'deprecated upstream in 2027.1.')],
        help='Concurrency model of the agent process. Read once at start; '
             'changing it needs a restart.'),
]

agent_opts = [
    cfg.IntOpt(
        'report_interval', default=30, min=0,
        help='Seconds between state reports to neutron-server; 0 disables '
             'reporting (the server will then consider the agent dead). '
             'Should be less than half of the server\'s agent_down_time.',
        mutable=True),
    cfg.BoolOpt(
        'log_agent_heartbeats', default=False, mutable=True,
        help='Log every state report at INFO level.'),
    cfg.StrOpt(
        'availability_zone', default='nova',
        help='Availability zone reported for this agent.'),
    cfg.StrOpt(
        'root_helper', default='sudo',
        help='Command prefix used to start the privsep daemons as root when '
             'the agent runs unprivileged (e.g. "sudo"). Ignored when the '
             'agent already runs as root: the helper is then started '
             'directly.'),
    cfg.IntOpt(
        'audit_interval', default=600, min=0, mutable=True,
        deprecated_name='resync_interval',
        help='Seconds between audits: full syncs that compare the host with '
             'neutron-server and change only what differs, in case an event '
             'was lost without any sign. 0 turns them off. Besides audits, '
             'an agent syncs in full only at start, when the server says it '
             'had considered the agent dead, when neutron-server is '
             'reachable again after failed state reports, and after a '
             'failure that exhausted its retries; otherwise it acts on '
             'events alone, as Neutron\'s agents do.'),
    cfg.IntOpt(
        'resync_max_retries', default=5, min=0, mutable=True,
        help='How often a failing resource is retried (with exponential '
             'back-off) before a full resync is scheduled for it.'),
    cfg.IntOpt(
        'worker_threads', default=8, min=1,
        help='Threads that process resource events from the work queue.'),
]

AGENT_GROUP = 'agent'


def register_common_opts(conf: cfg.ConfigOpts) -> None:
    """Register the options shared by all agents on ``conf``."""
    conf.register_opts(core_opts)
    conf.register_opts(agent_opts, group=AGENT_GROUP)
