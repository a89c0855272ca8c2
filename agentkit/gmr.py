"""Guru Meditation Reports (oslo.reports) with what an agent is doing.

``kill -USR2 <agent pid>`` writes oslo.reports' standard report (package,
threads with their stacks, processes, configuration with secrets masked)
to stderr, or to a file in ``[oslo_reports] log_dir``; ``[oslo_reports]
file_event_handler`` replaces the signal with a watched file, as in the
other OpenStack services. agentkit adds its sections, read without
stopping anything: the work queue, the loaded drivers, the resources the
agent manages and where its time went (agentkit.lib.timing).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from oslo_config import cfg
from oslo_reports import guru_meditation_report as gmr
from oslo_reports import opts as gmr_opts
from oslo_reports.models import with_default_views

from agentkit import version
from agentkit.lib import timing

#: the sections agentkit adds (their titles, as they appear in a report)
AGENT_SECTION = 'Agent'
QUEUE_SECTION = 'Work Queue'
DRIVERS_SECTION = 'Drivers'
RESOURCES_SECTION = 'Resources'
TIME_SECTION = 'Time Spent'

_NAMESPACE_PREFIX = 'agentkit.'


def register_opts(conf: cfg.ConfigOpts) -> None:
    """``[oslo_reports]`` (log_dir, file_event_handler, ...), before parsing."""
    gmr_opts.set_defaults(conf)


def driver_aliases(drivers: list[Any]) -> dict[str, str]:
    """``namespace:alias`` -> ``module.Class`` for each loaded driver instance.

    Drivers do not know the alias they were loaded by; the installed entry
    points that name their class do.
    """
    by_class: dict[tuple[str, str], list[str]] = {}
    seen: set[tuple[str, str, str]] = set()
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            key = (ep.group, ep.name, ep.value)
            if ep.group.startswith(_NAMESPACE_PREFIX) and key not in seen:
                seen.add(key)
                by_class.setdefault((ep.module, ep.attr), []).append(
                    f'{ep.group}:{ep.name}')
    result: dict[str, str] = {}
    for drv in drivers:
        cls = type(drv)
        path = f'{cls.__module__}.{cls.__qualname__}'
        names = by_class.get((cls.__module__, cls.__qualname__)) or [f'(no alias):{path}']
        for name in names:
            result[name] = path
    return result


class VersionInfo:
    """What oslo.reports' Package section asks for (pbr's object lacks it)."""

    def __init__(self, prog: str) -> None:
        self.prog = prog

    def vendor_string(self) -> str:
        return 'agentkit'

    def product_string(self) -> str:
        return self.prog

    def version_string_with_package(self) -> str:
        return version.version_info.version_string()


def _model(data: Any) -> with_default_views.ModelWithDefaultViews:
    return with_default_views.ModelWithDefaultViews(data)


def agent_sections(agent: Any) -> list[tuple[str, Any]]:
    """(title, generator) for agentkit's sections about ``agent``."""

    def agent_state() -> Any:
        return _model({'binary': agent.binary, 'host': agent.host,
                       'agent_type': agent.agent_type, 'status': agent.status(),
                       'ready': agent.is_ready(),
                       'alive': agent.health() or 'yes',
                       'full_syncs_done': agent.fullsyncs_done})

    def queue() -> Any:
        return _model(agent.queue.snapshot())

    def drivers() -> Any:
        return _model(driver_aliases(agent.drivers()))

    def resources() -> Any:
        return _model(agent.resource_counts())

    def time_spent() -> Any:
        return _model(timing.LEDGER.snapshot())

    return [(AGENT_SECTION, agent_state), (QUEUE_SECTION, queue),
            (DRIVERS_SECTION, drivers), (RESOURCES_SECTION, resources),
            (TIME_SECTION, time_spent)]


def setup(conf: cfg.ConfigOpts, agent: Any, prog: str) -> None:
    """Register agentkit's sections and arm SIGUSR2 (or the watched file)."""
    for title, generator in agent_sections(agent):
        gmr.TextGuruMeditation.register_section(title, generator)
    gmr.TextGuruMeditation.setup_autorun(VersionInfo(prog), service_name=prog,
                                         conf=conf)
