"""``agentkit-doctor``: name the broken hop between a VM and its services.

An operator debugging "my VM gets no lease" used to list namespaces, find
the tap, check the bridge and read dnsmasq's files by hand. The doctor asks
neutron-server what a port or network should be (:mod:`.intent`, read-only
RPC calls only), reads what this host has (:mod:`.host`, :mod:`.hosts_ovs`)
and walks the path hop by hop (:mod:`.hops`), printing each hop with its
evidence and, when broken, the likely cause and the command that shows it
(:mod:`.report`). It never changes anything on the host or the server.
"""
