"""Console-script entry points; each is a thin call into :mod:`agentkit.service`."""
