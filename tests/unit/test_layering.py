"""The walls of the architecture, checked on the source (README "Architecture").

Drivers reach the core only through ``agentkit.api``, ``agentkit.lib`` and
``agentkit.exceptions``; the core never imports a driver (it finds them by
alias through stevedore).
"""

import ast
import pathlib

from tests import base

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: What of agentkit a driver may import.
DRIVER_SEAMS = ('agentkit.api', 'agentkit.lib', 'agentkit.exceptions')


def imported(path: pathlib.Path) -> set[str]:
    """Every dotted name ``path`` imports (``from a import b`` gives a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.update(f'{node.module}.{alias.name}' for alias in node.names)
    return names


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + '.')


class LayeringTest(base.TestCase):

    def test_drivers_reach_the_core_through_api_and_lib_only(self) -> None:
        offenders = {}
        for path in sorted((ROOT / 'drivers').rglob('*.py')):
            bad = sorted(n for n in imported(path) if within(n, 'agentkit')
                         and not any(within(n, seam) for seam in DRIVER_SEAMS))
            if bad:
                offenders[str(path.relative_to(ROOT))] = bad
        self.assertEqual({}, offenders)

    def test_the_core_never_imports_a_driver(self) -> None:
        offenders = {str(path.relative_to(ROOT)): sorted(
                         n for n in imported(path) if within(n, 'drivers'))
                     for path in sorted((ROOT / 'agentkit').rglob('*.py'))}
        self.assertEqual({}, {p: names for p, names in offenders.items() if names})

    def test_the_checks_see_imports(self) -> None:
        # A check that finds nothing must not be a check that cannot see.
        names = imported(ROOT / 'drivers' / 'dhcp' / 'dnsmasq' / 'driver.py')
        self.assertIn('agentkit.api.dhcp', names)
        self.assertTrue(any(within(n, 'drivers') for n in names))
