"""Security-group rules as iptables rule specs: pure text, no kernel, no state.

Why a module of its own: unit tests pin the exact text of every kind of
rule here. Every value that reaches a rule is re-rendered from a parsed
int or ``ipaddress`` object (see :mod:`agentkit.api.security_group`),
never copied from an RPC payload, so nothing a server sends can escape
iptables-restore's grammar.
"""

from __future__ import annotations

from agentkit.api import security_group as sg

# Names iptables resolves by itself (no /etc/protocols needed); others go as numbers.
_IPTABLES_NAMES = {sg.TCP: 'tcp', sg.UDP: 'udp', sg.ICMP: 'icmp', sg.ICMPV6: 'ipv6-icmp',
                   sg.SCTP: 'sctp', sg.UDPLITE: 'udplite'}
# The match module that reads each port protocol's destination port.
_PORT_MATCHES = {sg.TCP: '-m tcp --dport', sg.UDP: '-m udp --dport',
                 sg.SCTP: '-m sctp --dport', sg.DCCP: '-m dccp --dport',
                 sg.UDPLITE: '-m multiport --dports'}


def protocol_args(rule: sg.SecurityGroupRule) -> str:
    """The protocol and port/type part of a rule ('' for any protocol)."""
    if rule.protocol is None:
        return ''
    args = '-p %s' % _IPTABLES_NAMES.get(rule.protocol, rule.protocol)
    if rule.protocol in (sg.ICMP, sg.ICMPV6) and rule.port_min is not None:
        kind = '-m icmp --icmp-type' if rule.protocol == sg.ICMP \
            else '-m icmp6 --icmpv6-type'
        value = str(rule.port_min) if rule.port_max is None \
            else '%s/%s' % (rule.port_min, rule.port_max)
        args += ' %s %s' % (kind, value)
    elif rule.protocol in _PORT_MATCHES and rule.port_min is not None:
        value = str(rule.port_min) if rule.port_max in (None, rule.port_min) \
            else '%d:%d' % (rule.port_min, rule.port_max)
        args += ' %s %s' % (_PORT_MATCHES[rule.protocol], value)
    return args


def rule_spec(rule: sg.SecurityGroupRule, member_set: str | None = None) -> str:
    """The ``-j RETURN`` spec of one rule for the port's ingress or egress chain.

    ``member_set`` is the ipset holding the members of the rule's remote
    group or address group (ingress matches the source, egress the
    destination): one rule whatever the number of members.
    """
    if rule.remote_id is not None:
        if member_set is None:
            raise ValueError('a remote-group rule needs its member set')
        remote = '-m set --match-set %s %s' % (
            member_set, 'src' if rule.direction == sg.INGRESS else 'dst')
    elif rule.remote_prefix is not None:
        remote = '%s %s' % ('-s' if rule.direction == sg.INGRESS else '-d', rule.remote_prefix)
    else:
        remote = ''
    parts = [remote, protocol_args(rule), '-j RETURN']
    return ' '.join(p for p in parts if p)
