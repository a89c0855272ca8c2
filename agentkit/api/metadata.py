"""Metadata drivers: the proxy that answers 169.254.169.254 inside namespaces.

A VM asks ``http://169.254.169.254/`` (or ``http://[fe80::a9fe:a9fe]/``)
for its metadata. It cannot be trusted to say who it is, so a proxy next
to its network -- one per router namespace (``qrouter-<id>``) and one per
isolated network's DHCP namespace (``qdhcp-<id>``) -- answers instead,
throws away every identity header the VM sent, and adds what it knows for
sure: the VM's source address and the router or network the request came
through. It forwards the request over the unix socket
``[DEFAULT] metadata_proxy_socket`` to the metadata agent, which maps
(router or network, source address) to a port and instance, signs the
instance id and asks Nova.

The L3 agent's router driver (``router=True``) and the DHCP agent's DHCP
driver (``router=False``) own the namespaces, addresses and iptables rules;
the metadata driver owns only the proxy processes and their files. A proxy
outlives the agent that started it (VMs keep their metadata across agent
restarts) and a restarted agent adopts it.

Headers the proxy guarantees to the metadata agent (every VM-sent copy of
:data:`FORGEABLE_HEADERS` is removed first):

* ``X-Forwarded-For``: the VM's address as the proxy saw it (the source of
  the TCP connection; IPv4 clients always in IPv4 form);
* exactly one of ``X-Neutron-Router-ID`` / ``X-Neutron-Network-ID``.

What the caller must have set up before :meth:`MetadataDriver.spawn_proxy`:

Router (``router=True``), the L3 agent:
    * the namespace, with its ``qr-`` devices;
    * a nat PREROUTING rule redirecting ``-d 169.254.169.254/32 -i qr-+ -p
      tcp --dport 80`` to ``[DEFAULT] metadata_port`` (REDIRECT), and filter
      INPUT rules that accept only those redirected packets on
      ``metadata_port`` (mark them in mangle, drop the rest), as the
      ``namespace`` router driver does: the proxy listens on every address
      of the namespace, including the gateway's. The proxy itself also
      refuses (HTTP 403) IPv4 requests whose original destination, before
      the REDIRECT, was not 169.254.169.254, but it cannot check that for
      IPv6;
    * for IPv6 VMs, the same with ip6tables for ``fe80::a9fe:a9fe/128``, and
      something that makes VMs resolve ``fe80::a9fe:a9fe`` to the router's
      ``qr-`` MAC (the address on the ``qr-`` devices, or proxy NDP). The
      proxy listens on ``[::]:<metadata_port>`` whenever the namespace has
      any IPv6 address (so it is enough that IPv6 is not disabled there).

Isolated network (``router=False``), the DHCP driver (and agent):
    * the namespace and the DHCP port's device in it holding
      :data:`METADATA_V4_DHCP_PORT_CIDR` (169.254.169.254/16); the proxy
      binds that address on port 80 and fails to start without it;
    * VMs routed to 169.254.169.254 via the DHCP port (the DHCP driver's
      classless static route);
    * for IPv6: :data:`METADATA_V6_IP` (``fe80::a9fe:a9fe``) added to the
      same device, with prefix /64 or /128 (Neutron adds /128; either works,
      the device's own link-local route covers replies). A link-local
      address only exists on one interface, and a socket can bind it only
      when bound to that interface: the proxy finds the device(s) holding
      the address at each call and binds ``[fe80::a9fe:a9fe]:80`` there
      (haproxy's ``interface``). DAD need not be over: the bind does not
      require the address to have left the ``tentative`` state. If another
      DHCP agent of the network already holds the address, DAD fails on
      this one; the proxy still binds it, harmlessly, and the VMs use the
      other agent. Call :meth:`~MetadataDriver.spawn_proxy` again after
      adding or removing the address: the listeners are derived from the
      namespace's addresses at every call.

Both:
    * the metadata agent serves ``metadata_proxy_socket``, and the proxy's
      user/group (``metadata_proxy_user``/``metadata_proxy_group``) can
      reach it (traverse its directories, write to the socket);
    * :meth:`~MetadataDriver.spawn_proxy` is called on every sync of the
      router/network (it is idempotent and cheap when nothing changed), and
      :meth:`~MetadataDriver.destroy_proxy` *before* the namespace is
      deleted (a proxy cannot be respawned into a namespace that is gone).

:mod:`agentkit.conf.metadata_proxy` holds the options every driver reads;
agents register them with ``register_metadata_proxy_opts(conf)``.
"""

import abc

from agentkit.api import driver
from agentkit.lib import external_process

#: Where VMs look for metadata (Neutron's constants).
METADATA_V4_IP = '169.254.169.254'
#: The metadata address as one host: the route a DHCP server pushes to VMs
#: (``169.254.169.254/32`` via the DHCP port or the router).
METADATA_V4_CIDR = METADATA_V4_IP + '/32'
#: The address a DHCP port holds while its namespace serves metadata
#: (Neutron's /16: the namespace then reaches all of 169.254.0.0/16 on-link).
METADATA_V4_DHCP_PORT_CIDR = METADATA_V4_IP + '/16'
METADATA_V6_IP = 'fe80::a9fe:a9fe'
#: The prefix Neutron gives the IPv6 metadata address on the DHCP port.
METADATA_V6_CIDR = METADATA_V6_IP + '/128'
#: The port VMs connect to; a DHCP namespace's proxy listens on it directly.
METADATA_PORT = 80

#: Headers only the proxy (and after it the metadata agent) may set: the
#: metadata agent trusts them to identify the instance.
FORGEABLE_HEADERS = ('X-Forwarded-For', 'X-Instance-ID', 'X-Tenant-ID',
                     'X-Instance-ID-Signature', 'X-Neutron-Router-ID',
                     'X-Neutron-Network-ID')
ROUTER_ID_HEADER = 'X-Neutron-Router-ID'
NETWORK_ID_HEADER = 'X-Neutron-Network-ID'


class MetadataDriver(driver.Driver):
    """Runs one metadata proxy per router or isolated network namespace.

    Proxies are keyed by ``resource_id`` alone: router and network ids are
    UUIDs that never collide. Implementations must be thread-safe (the
    agents' worker threads call them for different resources in parallel)
    and must leave proxies running in :meth:`~agentkit.api.driver.Driver.stop`.
    """

    def proxy_state(self, resource_id: str) -> external_process.ProcessState | None:
        """The proxy of a router or network as the host shows it, read only,
        for ``agentkit-doctor``; None when this driver cannot tell (the default)."""
        return None

    @abc.abstractmethod
    def spawn_proxy(self, namespace: str, resource_id: str,
                    router: bool) -> None:
        """Make the proxy of a router or network namespace run with the current config.

        Starts it if none runs; adopts a running one (left by a previous
        agent) without disturbing it when its configuration is what it would
        be now; restarts it when the configuration changed (options, the
        namespace's IPv6 addresses). Keeps it alive afterwards: a proxy that
        dies is started again within ``check_child_processes_interval``.

        Called on every sync, so it must be idempotent and cheap when
        nothing changed. See the module docstring for what must exist in
        the namespace first.

        :param namespace: the namespace to serve in (``qrouter-<id>`` or
            ``qdhcp-<id>`` for the Neutron-compatible agents).
        :param resource_id: the router id (``router=True``) or network id.
        :param router: True for a router namespace, where the proxy listens
            on ``metadata_port`` behind the REDIRECT and identifies requests
            by router; False for an isolated network's DHCP namespace, where
            it listens on 169.254.169.254:80 and identifies them by network.
        :raises agentkit.exceptions.InvalidIdentifier: ``resource_id`` or
            ``namespace`` is not safe to use (not retried by the agents).
        :raises agentkit.exceptions.ProcessError: the proxy did not start
            (e.g. 169.254.169.254 missing in a DHCP namespace); retry later.
        """

    @abc.abstractmethod
    def destroy_proxy(self, resource_id: str) -> None:
        """Stop the proxy and remove its files; idempotent.

        Works for proxies this driver instance never started (after an
        agent restart). Call it before deleting the namespace.

        :raises agentkit.exceptions.InvalidIdentifier: unsafe ``resource_id``.
        :raises agentkit.exceptions.ProcessError: the proxy survived SIGKILL.
        """

    @abc.abstractmethod
    def active_proxies(self, router: bool | None = None) -> set[str]:
        """Ids of the live proxies of this driver on this host.

        Found on disk (pid files, plus the proxy's own record of whether it
        serves a router or a network), not only in memory, so an agent's
        full sync after a restart sees the proxies the previous run left and
        destroys those of routers/networks it no longer hosts.

        :param router: True for router proxies only, False for network
            proxies only, None for both. A DHCP agent and an L3 agent on one
            host usually share ``state_path``, so each must ask only for its
            kind, or it would destroy the other's proxies.
        """
