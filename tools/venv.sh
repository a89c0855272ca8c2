#!/usr/bin/env bash
# Create (or refresh) the project virtualenv in .venv with agentkit installed
# in development mode plus the test requirements. Prints nothing on success
# but the path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AGENTKIT_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
stamp="$VENV/.agentkit-installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ requirements.txt -nt "$stamp" ] \
        || [ test-requirements.txt -nt "$stamp" ]; then
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -r requirements.txt -r test-requirements.txt
    "$VENV/bin/pip" install -q -e . --no-deps
    touch "$stamp"
fi
echo "$VENV"
