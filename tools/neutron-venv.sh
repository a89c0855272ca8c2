#!/usr/bin/env bash
# Build (or confirm) a separate virtualenv holding neutron-server's code, so
# the server-side ML2 driver of drivers/ml2/ can be tested against neutron's
# real driver API. agentkit itself never depends on neutron: this venv exists
# only for those tests (tests/unit/test_ml2_linuxbridge.py skips without it).
#
#   tools/neutron-venv.sh           build it if missing/outdated; print its path
#
# Idempotent and cheap to re-run: a stamp records what was installed and the
# slow part only runs when the stamp is missing or older than setup.cfg.
# AGENTKIT_NEUTRON_VENV overrides the location, AGENTKIT_NEUTRON_VERSION the
# neutron release (default 29.0.0, the series agentkit is tested against).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AGENTKIT_NEUTRON_VENV:-.venv-neutron}
VERSION=${AGENTKIT_NEUTRON_VERSION:-29.0.0}
stamp="$VENV/.agentkit-neutron-$VERSION"

if [ -f "$stamp" ] && [ ! setup.cfg -nt "$stamp" ] && [ -x "$VENV/bin/python" ]; then
    echo "$VENV"
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
# Keep the venv out of git without touching the project's .gitignore.
printf '*\n' > "$VENV/.gitignore"
rm -f "$VENV"/.agentkit-neutron-*
{
    "$VENV/bin/pip" install -q --upgrade pip
    # testtools/fixtures/stestr: the test module runs inside this venv too.
    "$VENV/bin/pip" install -q "neutron==$VERSION" testtools fixtures stestr PyMySQL pyuwsgi
    "$VENV/bin/pip" install -q -e . --no-deps
} >&2
"$VENV/bin/python" -c 'import neutron.plugins.ml2.drivers.mech_agent' >&2
touch "$stamp"
echo "$VENV"
