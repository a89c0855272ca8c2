"""An out-of-tree agentkit driver package (test fixture).

It reaches agentkit only through its public driver API and is found only
through the entry points in its pyproject.toml.
"""
