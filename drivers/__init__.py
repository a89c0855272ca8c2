"""In-tree agentkit drivers.

These modules use only agentkit's public driver API (``agentkit.api`` and the
host libraries in ``agentkit.lib``) and are found only through the entry
points in setup.cfg, exactly as a third-party driver package would be.
"""
