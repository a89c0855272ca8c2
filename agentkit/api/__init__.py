"""The public driver API: one abstract base class per driver role.

The core agents know drivers only through these classes; a driver (in-tree
under ``drivers/`` or in a third-party package) subclasses one of them and
registers it under the matching entry-point namespace:

=====================================  ==========================================
namespace                              base class
=====================================  ==========================================
``agentkit.mechanism_drivers``         :class:`agentkit.api.mechanism.MechanismDriver`
``agentkit.type_drivers``              :class:`agentkit.api.type_driver.TypeDriver`
``agentkit.firewall_drivers``          :class:`agentkit.api.firewall.FirewallDriver`
``agentkit.interface_drivers``         :class:`agentkit.api.interface.InterfaceDriver`
``agentkit.dhcp_drivers``              :class:`agentkit.api.dhcp.DhcpDriver`
``agentkit.l3_drivers``                :class:`agentkit.api.l3.RouterDriver`
``agentkit.metadata_drivers``          :class:`agentkit.api.metadata.MetadataDriver`
``agentkit.agent_extensions``          :class:`agentkit.api.extension.AgentExtension`
=====================================  ==========================================

Every driver is constructed with the keyword arguments ``conf`` (the agent's
``oslo_config.cfg.ConfigOpts``) and ``host`` (this host's name as
neutron-server knows it). Options only a driver reads live in its module:
it lists them in :attr:`agentkit.api.driver.Driver.options`, which the base
constructor registers and checks, and for oslo-config-generator in an
``oslo.config.opts`` entry point; options shared with its agent are the
agent's and are read from ``conf`` by name.
"""
