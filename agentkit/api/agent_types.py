"""The ``agent_type`` values neutron-server matches agents on.

An agent reports one of these in ``report_state``; ML2 mechanism drivers on
the server bind ports only to hosts with an alive agent of their type, and
the DHCP/L3 schedulers pick agents by it. A mechanism driver names its type
(``MechanismDriver.agent_type``), so the values belong to the driver API.
"""

OPEN_VSWITCH = 'Open vSwitch agent'
LINUX_BRIDGE = 'Linux bridge agent'
DHCP = 'DHCP agent'
L3 = 'L3 agent'
METADATA = 'Metadata agent'
