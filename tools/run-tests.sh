#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine (as root, or with sudo) it
# installs the system packages, starts OVS and RabbitMQ, builds .venv and runs
# the unit tests, the functional tests (real kernel/OVS/RabbitMQ/dnsmasq)
# and flake8. Exits non-zero on any failure.
#   tools/run-tests.sh            unit + functional + pep8
#   tools/run-tests.sh unit       only unit tests (no root needed)
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}

if [ "$what" != unit ]; then
    bash tools/install-deps.sh || { echo "install-deps failed"; exit 1; }
fi
VENV=$(bash tools/venv.sh) || { echo "venv setup failed"; exit 1; }
if [ "$what" != unit ]; then
    # neutron-server's ML2 API for the server-side linuxbridge driver's test
    # (neutron is never a dependency of the agents themselves).
    nlog=$(mktemp)
    bash tools/neutron-venv.sh >"$nlog" 2>&1 || { cat "$nlog"; echo "neutron venv setup failed"; exit 1; }
    rm -f "$nlog"
fi
export PATH="$PWD/$VENV/bin:$PATH"

passed=0; failed=0; skipped=0; rc=0
run_suite() {  # name, stestr args...
    local name=$1; shift
    echo "== $name tests"
    local out
    out=$(mktemp)
    stestr "$@" 2>&1 | tee "$out" | grep -vE '^\{[0-9]+\} .* \.\.\. ok$' 
    local suite_rc=${PIPESTATUS[0]}
    local p f s
    p=$(grep -E '^ - Passed: ' "$out" | tail -1 | awk '{print $3}')
    f=$(grep -E '^ - Failed: ' "$out" | tail -1 | awk '{print $3}')
    s=$(grep -E '^ - Skipped: ' "$out" | tail -1 | awk '{print $3}')
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
    if [ "$suite_rc" -ne 0 ] || [ -z "$p" ] || [ "${p:-0}" -eq 0 ]; then
        echo "!! $name tests failed (rc=$suite_rc)"; rc=1
        [ -z "$f" ] && failed=$((failed + 1))
    fi
    rm -f "$out"
}

run_suite unit --test-path ./tests/unit run
if [ "$what" != unit ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "functional tests need root"; rc=1
    else
        # The real neutron-server is started by the first test process that
        # needs it and stopped when that process exits: its tests share one.
        run_suite functional --test-path ./tests/functional run --concurrency 2 \
            --group-regex 'tests\.functional\.test_real_neutron_server\.'
    fi
    echo "== pep8"
    if ! flake8 agentkit drivers tests; then echo "!! flake8 failed"; rc=1; fi
fi
echo "agentkit: $passed passed, $failed failed, $skipped skipped"
exit $rc
