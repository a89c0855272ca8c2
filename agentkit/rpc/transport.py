"""oslo.messaging transport and request contexts as neutron-server expects them."""

import datetime
import uuid
from typing import Any

import oslo_messaging
from oslo_config import cfg

from agentkit.rpc import topics


def set_defaults(conf: cfg.ConfigOpts) -> None:
    """Make ``neutron`` the control exchange unless configured otherwise."""
    oslo_messaging.set_transport_defaults(control_exchange=topics.CONTROL_EXCHANGE)


def get_transport(conf: cfg.ConfigOpts) -> oslo_messaging.Transport:
    """The RPC transport named by ``[DEFAULT] transport_url``.

    oslo.messaging registers its metrics and tracing options only on the
    global ``cfg.CONF``, so agents always pass ``cfg.CONF`` here.
    """
    set_defaults(conf)
    return oslo_messaging.get_rpc_transport(conf)


def admin_context(request_id: str | None = None) -> dict[str, Any]:
    """A request context dict shaped like neutron_lib's admin context.

    The rabbit driver flattens it into the ``_context_*`` keys neutron-server
    reads (``_context_is_admin``, ``_context_request_id``, ...).
    """
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    return {
        'user_id': None, 'user': None,
        'project_id': None, 'project': None,
        'user_name': None, 'project_name': None,
        'domain': None, 'user_domain': None, 'project_domain': None,
        'is_admin': True, 'is_admin_project': True,
        'read_only': False, 'show_deleted': False,
        'roles': ['admin'], 'auth_token': None,
        'request_id': request_id or f'req-{uuid.uuid4()}',
        'global_request_id': None, 'resource_uuid': None,
        'system_scope': None, 'has_global_access': True,
        'can_set_project_id': True,
        'timestamp': now.strftime('%Y-%m-%d %H:%M:%S.%f'),
        'user_identity': '- - - - -',
    }
