"""Releasing a DHCP lease dnsmasq still holds for a deleted port.

``dhcp_release`` / ``dhcp_release6`` (Debian ``dnsmasq-utils``) must run as
root inside the network's namespace; the privileged layer runs them
(:mod:`agentkit.privileged.dhcp_release`). This is the DHCP driver's way to
them, as :mod:`agentkit.lib.ip_lib` is its way to netlink: drivers reach the
core through ``agentkit.api`` and ``agentkit.lib`` only.
"""

import shutil

from agentkit.privileged import dhcp_release as _privileged
from agentkit.privileged import tool_exec as _tool_exec

DHCP_RELEASE = _privileged.DHCP_RELEASE
DHCP_RELEASE6 = _privileged.DHCP_RELEASE6
#: Where root looks for the tools (a fixed path, never the agent's PATH).
SEARCH_PATH = _tool_exec.SEARCH_PATH

#: ``(returncode, output)`` of ``dhcp_release`` in a ``qdhcp-`` namespace.
release_lease = _privileged.release_lease
#: ``(returncode, output)`` of ``dhcp_release6`` in a ``qdhcp-`` namespace.
release_lease6 = _privileged.release_lease6


def installed(tool: str) -> bool:
    """Whether root finds ``tool`` (``DHCP_RELEASE`` or ``DHCP_RELEASE6``)."""
    return shutil.which(tool, path=SEARCH_PATH) is not None
