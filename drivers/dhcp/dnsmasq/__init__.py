"""``dnsmasq`` DHCP driver: one dnsmasq per network, inside its namespace.

Why it is built this way:

* The command line and the files in ``<state_path>/dhcp/<network-id>``
  (``host``, ``addn_hosts``, ``opts``, ``leases``, ``pid``, ``interface``)
  have the shapes Neutron's DHCP agent produces (checked against a live
  Neutron 29 dnsmasq), so operators' tools and habits keep working.
* dnsmasq re-reads ``host``, ``addn_hosts`` and ``opts`` on SIGHUP with the
  same pid, so port changes never restart it. Only a change of the command
  line (the set of DHCP subnets, the MTU, the lease time) restarts it.
* dnsmasq outlives the agent: a restarted agent adopts a dnsmasq whose
  command line is unchanged, and signals it only if a file really changed.
* Every value from the server ends up in files dnsmasq parses line by line,
  so the files are written only from the typed network of
  :mod:`agentkit.api.dhcp`, which the agent validated at its edge
  (:mod:`agentkit.api.dhcp_payload`): a hostile value can neither inject a
  dnsmasq directive nor escape the state directory.
* dnsmasq reads its files only after dropping to ``nobody``; if ``nobody``
  cannot traverse the state directory, dnsmasq runs and silently answers
  nothing. :meth:`DnsmasqDriver.initialize` refuses such a ``state_path``.

The package, one concern per module:

* :mod:`.render` -- the command line and files, pure functions of the network;
* :mod:`.leases` -- dnsmasq's lease file and the leases of deleted ports;
* :mod:`.files` -- atomic writes and directories dnsmasq (as ``nobody``) can read;
* :mod:`.driver` -- :class:`~.driver.DnsmasqDriver`, the processes; the
  namespace and DHCP port come from :mod:`drivers.dhcp.namespaced`.
"""
