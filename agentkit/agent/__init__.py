"""The core agent runtime shared by every agentkit agent.

``base.Agent`` is the lifecycle (drivers, RPC, state reports, resync);
``work_queue`` orders resource work (RPC events before periodic sync);
``state_report`` keeps neutron-server convinced the agent is alive; ``l2``,
``dhcp``, ``l3`` and ``metadata`` are the concrete agents.
"""
