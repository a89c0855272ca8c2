"""Open vSwitch access through OVSDB (ovsdbapp's native IDL), no ``ovs-vsctl``.

Why native IDL: every ``ovs-vsctl`` run is a process exec, a connection
and a full DB dump (~10 ms here, far more on a loaded host with a big DB);
the IDL keeps an in-memory replica of the database, reads are cache
lookups, and many operations are committed as ONE OVSDB transaction
(measured here: 200 internal ports in 0.2-0.6 s, vs 0.5 s for 50 ports
added by 50 ``ovs-vsctl`` runs). The same connection also delivers row
notifications, which is how the L2 agent learns within milliseconds that
nova/os-vif plugged a VM port.

One concern per module:

* :mod:`.validation` - names, maps, tags, tunnel options (pure).
* :mod:`.errors` - what an OVSDB operation raises.
* :mod:`.rows` - reading the IDL replica: row lookup, interface snapshots.
* :mod:`.idl` - ovsdbapp plumbing: the notifying IDL, the two kinds of
  transaction (waiting for ovs-vswitchd or not), the per-connection API.
* :mod:`.events` - interface plug/unplug events and the callback thread.
* :mod:`.vswitchd` - noticing an ovs-vswitchd restart (not visible in OVSDB).
* :mod:`.connection` - the shared connection (one per endpoint and process).
* :mod:`.ports` - the declarative port writer: "this port should exist with
  these columns; change only what differs".
* :mod:`.bridge` - a bridge by name: create/delete it, add/delete ports.
"""
