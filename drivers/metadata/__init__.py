"""Metadata proxy drivers (entry points in ``agentkit.metadata_drivers``)."""
