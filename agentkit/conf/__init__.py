"""oslo.config options, grouped by agent; options only, no logic.

Each module exposes ``register_*_opts(conf)`` and the option lists that
``agentkit.opts`` hands to oslo-config-generator. Options only one driver
reads live beside that driver instead (``Driver.options`` in
:mod:`agentkit.api.driver`), which registers them when it is loaded.
"""
