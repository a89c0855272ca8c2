"""neutron-server plugins for agentkit's agents (ML2 mechanism drivers).

Unlike the rest of ``drivers``, these run inside neutron-server, not in an
agentkit agent, and import neutron: they load only where neutron is
installed (agentkit's ``neutron`` extra). Nothing in agentkit imports them.
"""
