"""DHCP drivers (entry points in ``agentkit.dhcp_drivers``)."""
