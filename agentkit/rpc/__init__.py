"""RPC with neutron-server over oslo.messaging, wire-compatible with Neutron.

``transport`` builds the transport and request contexts, ``client`` is the
base of the per-API clients (``report_api``, ``plugin_api``, ``dhcp_api``,
``l3_api``), ``consumer`` runs the RPC servers for the topics an agent
serves. Import this package only after ``agentkit.concurrency.select()``.
"""
