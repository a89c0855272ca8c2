"""Firewall drivers: security groups and anti-spoofing on the ports of this host.

The L2 agent owns the conversation with neutron-server: it asks
``security_group_info_for_devices`` for the ports it wires, parses the
reply once into :mod:`agentkit.api.security_group` types, and hands the
driver the ports together with the rules and members they need. It calls
the driver *before* wiring a port, so a new port never passes traffic
unfiltered, and again for exactly the ports a ``security_groups_rule_updated``
or ``security_groups_member_updated`` notification affects.

What a driver must do with a :class:`~agentkit.api.security_group.PortFilter`:

* ``trusted`` ports (DHCP, routers) and ports with ``port_security`` off
  pass unfiltered, but must not be cut off by the host's own policy;
* every other port gets its groups' rules (stateful unless the group says
  otherwise), the closed default for everything else (DHCP client traffic
  and the ICMPv6 a guest needs excepted), and anti-spoofing: IP, MAC and
  ARP only from its ``sources``;
* connection-tracking state must never be shared between networks (two
  projects may use the same addresses), and when a rule or a remote member
  goes away, the connections it allowed must stop.
"""

import abc
from collections.abc import Sequence

from agentkit.api import driver
from agentkit.api import security_group


class FirewallDriver(driver.Driver):
    """Applies security groups and anti-spoofing to the ports of this host."""

    #: Whether the agent must fetch ``security_group_info_for_devices`` for
    #: this driver (the noop driver needs nothing).
    needs_security_group_info: bool = True

    @abc.abstractmethod
    def apply_port_filters(self, ports: Sequence[security_group.PortFilter],
                           info: security_group.SecurityGroupInfo) -> None:
        """Filter ``ports`` (new or changed) with the rules and members in ``info``.

        ``info`` holds every group of ``ports`` and the members of every
        remote group their rules name; a group in ``info`` replaces what the
        driver knew of it, also for other ports in that group. Idempotent:
        applying the same ports and info again must not touch the host. One
        call is one host change (e.g. one ``iptables-restore``), whatever
        the number of ports.

        :raises Exception: the host could not be changed; the agent retries,
            then resyncs. What was in force before stays in force.
        """

    def sync_port_filters(self, ports: Sequence[security_group.PortFilter],
                          info: security_group.SecurityGroupInfo,
                          unknown_devices: Sequence[str]) -> None:
        """A full sync: filter ``ports``, and shut ``unknown_devices``.

        ``unknown_devices`` are host devices (taps) of ports plugged here
        that the server gave no usable details for (unbound, deleted while
        the agent was down): they must pass nothing until a later
        :meth:`apply_port_filters` or :meth:`remove_port_filters` names
        them. After an agent restart this is the driver's first call, so
        it is where a driver rebuilding its whole state must not leave
        any plugged port unfiltered. The default treats it as an apply.
        """
        self.apply_port_filters(ports, info)

    @abc.abstractmethod
    def remove_port_filters(self, port_ids: Sequence[str],
                            devices: Sequence[str] = ()) -> None:
        """Forget the ports, and the shut ``devices``; remove what was installed (idempotent)."""

    def remove_all(self) -> None:
        """Take every rule of this driver off the host (not on a normal stop).

        A stopped agent leaves its filters in place so VMs stay protected
        across restarts; this is for an operator switching the firewall
        off for good, and for tests.
        """
