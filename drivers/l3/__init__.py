"""Router drivers (``agentkit.l3_drivers`` entry points)."""
