"""Client of ``q-reports-plugin``: agent liveness (Neutron's PluginReportStateAPI)."""

import datetime
from typing import Any

from agentkit.rpc import client
from agentkit.rpc import topics

# neutron_lib's ISO8601 time format for the 'time' argument
_TIME_FORMAT = '%Y-%m-%dT%H:%M:%S.%f'
#: connection attempts of one report: oslo.messaging's default (None) would
#: block the report until the broker is back, so an outage would never show
#: as a failed report, and the resync after it (casts sent meanwhile went to
#: queues that no longer existed) would never happen
REPORT_RETRY = 1


class ReportStateApi(client.ServerApiClient):
    topic = topics.REPORTS
    base_version = '1.0'

    def report_state(self, agent_state: dict[str, Any], use_call: bool = True,
                     timeout: float | None = None) -> Any:
        """Send ``report_state`` (1.4); returns the server's answer on a call.

        neutron-server answers ``"alive"``, or ``"revived"`` when it had
        considered the agent dead — the agent must then resync fully. With
        the broker unreachable it raises (after :data:`REPORT_RETRY`
        reconnection attempts) rather than waiting for it.
        """
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        kwargs: dict[str, Any] = {'agent_state': {'agent_state': agent_state},
                                  'time': now.strftime(_TIME_FORMAT)}
        if use_call:
            return self._call('1.4', 'report_state', timeout=timeout,
                              retry=REPORT_RETRY, **kwargs)
        self._cast('1.4', 'report_state', retry=REPORT_RETRY, **kwargs)
        return None

    def has_alive_neutron_server(self, timeout: float | None = None) -> bool:
        return bool(self._call('1.4', 'has_alive_neutron_server',
                               timeout=timeout))
