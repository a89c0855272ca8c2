"""Does a port's iptables security-group chain let DHCP (IPv4) through?

The iptables_hybrid firewall gives each port an egress chain
``<prefix>-o<port[:10]>`` (frames from the VM) and an ingress chain
``<prefix>-i<port[:10]>`` (frames to it). The first rule of a chain that a
DHCP packet certainly matches decides: RETURN/ACCEPT lets it on, DROP/REJECT
or the fallback chain drops it. Rules with any other condition (state,
sets, addresses, other protocols) may not match and are passed over, as
are jumps to other chains (the anti-spoofing chain returns for the VM's own
addresses). This is a reading of the rules, not a packet simulation: it
exists to name a rule that drops DHCP.
"""

import shlex

EGRESS, INGRESS = 'o', 'i'
#: (source port, destination port) of a DHCPv4 packet in each direction.
DHCP_PORTS = {EGRESS: ('68', '67'), INGRESS: ('67', '68')}
ALLOW = frozenset({'RETURN', 'ACCEPT'})
DENY = frozenset({'DROP', 'REJECT'})
FALLBACK_SUFFIX = '-sg-fallback'
#: Options that do not narrow what a DHCP packet matches.
_NEUTRAL = {('-m', 'udp'), ('-m', 'comment'), ('-p', 'udp'), ('-s', '0.0.0.0/32'),
            ('-d', '255.255.255.255/32')}


def chain_rules(rules: list[str], direction: str, port_id: str) -> tuple[str, list[str]] | None:
    """(chain, its rules in order) of the port's chain in ``direction``, None if absent."""
    suffix = f'-{direction}{port_id[:10]}'
    chains = {line.split()[1] for line in rules
              if line.startswith('-A ') and line.split()[1].endswith(suffix)}
    if not chains:
        return None
    chain = sorted(chains)[0]
    return chain, [line for line in rules if line.split()[:2] == ['-A', chain]]


def _matches_dhcp(args: list[str], direction: str) -> bool:
    """Whether every condition of the rule holds for a DHCP packet."""
    sport, dport = DHCP_PORTS[direction]
    i = 0
    while i < len(args):
        option = args[i]
        value = args[i + 1] if i + 1 < len(args) else ''
        if option == '--comment':
            i += 2
        elif option in ('--sport', '--source-port'):
            if value != sport:
                return False
            i += 2
        elif option in ('--dport', '--destination-port'):
            if value != dport:
                return False
            i += 2
        elif (option, value) in _NEUTRAL:
            i += 2
        else:
            return False
    return True


def decide(chain_lines: list[str], direction: str) -> tuple[bool | None, str | None]:
    """(True allowed / False dropped / None undecided, the deciding rule)."""
    for line in chain_lines:
        words = shlex.split(line)[2:]
        if '-j' not in words:
            continue
        at = words.index('-j')
        target, conditions = words[at + 1] if at + 1 < len(words) else '', words[:at]
        terminal = target in ALLOW or target in DENY or target.endswith(FALLBACK_SUFFIX)
        if not terminal or not _matches_dhcp(conditions, direction):
            continue
        return target in ALLOW, line
    return None, None
