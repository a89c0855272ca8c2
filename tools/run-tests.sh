#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine (as root, or with sudo) it
# installs the system packages, starts OVS and RabbitMQ, builds .venv and runs
# the unit tests, the functional tests (real kernel/OVS/RabbitMQ/dnsmasq),
# the fullstack suite (`tox -e fullstack`: the real neutron-server 29 drives
# agentkit's four agents), flake8 and mypy. Exits non-zero on any failure.
#   tools/run-tests.sh            unit + functional + fullstack + pep8
#   tools/run-tests.sh unit       only unit tests (no root needed)
#   tools/run-tests.sh fullstack [regex]  only the fullstack suite (tox -e fullstack)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
what=${1:-all}
[ $# -gt 0 ] && shift  # the rest: a test filter (fullstack only)
case "$what" in all|unit|fullstack) ;; *) echo "usage: $0 [all|unit|fullstack]"; exit 2 ;; esac

if [ "$what" != unit ]; then
    bash tools/install-deps.sh || { echo "install-deps failed"; exit 1; }
fi
VENV=$(bash tools/venv.sh) || { echo "venv setup failed"; exit 1; }
if [ "$what" != unit ]; then
    # neutron-server 29 from PyPI for the fullstack suite and the server-side
    # linuxbridge driver's test (neutron is never a dependency of the agents).
    nlog=$(mktemp)
    bash tools/neutron-venv.sh >"$nlog" 2>&1 || { cat "$nlog"; echo "neutron venv setup failed"; exit 1; }
    rm -f "$nlog"
fi
export PATH="$PWD/$VENV/bin:$PATH"

passed=0; failed=0; skipped=0; rc=0
failures=""  # the failed tests and their errors, repeated at the very end
run_suite() {  # name, command...
    local name=$1; shift
    echo "== $name tests"
    local out
    out=$(mktemp)
    "$@" 2>&1 | tee "$out" | grep -vE '^\{[0-9]+\} .* \.\.\. ok$'
    local suite_rc=${PIPESTATUS[0]}
    local p f s
    p=$(grep -E '^ - Passed: ' "$out" | tail -1 | awk '{print $3}')
    f=$(grep -E '^ - Failed: ' "$out" | tail -1 | awk '{print $3}')
    s=$(grep -E '^ - Skipped: ' "$out" | tail -1 | awk '{print $3}')
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
    if [ "$suite_rc" -ne 0 ] || [ -z "$p" ] || [ "${p:-0}" -eq 0 ]; then
        echo "!! $name tests failed (rc=$suite_rc)"; rc=1
        [ -z "$f" ] && failed=$((failed + 1))
        # A failing test's attachments (server logs) can push its name out
        # of a CI log's tail: keep the names and the raised errors for the end.
        failures+="$(grep -E '\.\.\. FAILED$' "$out" | sed 's/^/   /')"$'\n'
        failures+="$(grep -E '^ *[A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Mismatch|Timeout)[A-Za-z]*: ' "$out" \
            | grep -v -e '^ *keystoneauth1' -e '^ *ModuleNotFoundError' | head -5 | cut -c1-300 | sed 's/^/     /')"$'\n'
    fi
    rm -f "$out"
}

needs_root() {
    [ "$(id -u)" -eq 0 ] && return 0
    echo "$1 tests need root"; rc=1; return 1
}

if [ "$what" = fullstack ]; then
    # One test process: its tests share one neutron-server (started by the
    # first test, stopped when the process exits).
    needs_root fullstack && run_suite fullstack stestr --test-path ./tests/fullstack run --concurrency 1 "$@"
    echo "agentkit fullstack: $passed passed, $failed failed, $skipped skipped"
    [ -n "${failures//$'\n'/}" ] && printf 'failed:\n%s' "$failures"
    exit $rc
fi

# The fault and bad-input cases record what they measured here; the report
# (doc/reliability.md) is written from this run's records only.
export AGENTKIT_RELIABILITY_DIR="$PWD/.reliability"
[ "$what" = all ] && rm -rf "$AGENTKIT_RELIABILITY_DIR"
run_suite unit stestr --test-path ./tests/unit run
if [ "$what" = all ]; then
    if needs_root functional; then
        run_suite functional stestr --test-path ./tests/functional run --concurrency 2
        # Faults restart shared OVS, RabbitMQ and daemons: one at a time.
        run_suite faults stestr --test-path ./tests/faults run --concurrency 1
        run_suite fullstack tox -e fullstack
    fi
    echo "== reliability report"
    if [ -d "$AGENTKIT_RELIABILITY_DIR" ]; then
        python tools/reliability-report.py || { echo "!! reliability report failed"; rc=1; }
    fi
    echo "== pep8"
    if ! flake8 agentkit drivers tests benchmarks tools/*.py; then echo "!! flake8 failed"; rc=1; fi
    echo "== mypy (tox -e mypy: setup.cfg [mypy], strict for agentkit.api and agentkit.lib)"
    if ! mypy; then echo "!! mypy failed"; rc=1; fi
    echo "== shellcheck"
    if ! command -v shellcheck >/dev/null; then echo "!! shellcheck missing (bindep.txt)"; rc=1
    elif ! shellcheck tools/*.sh devstack/plugin.sh .ci/run; then echo "!! shellcheck failed"; rc=1; fi
fi
echo "agentkit: $passed passed, $failed failed, $skipped skipped"
[ -n "${failures//$'\n'/}" ] && printf 'failed:\n%s' "$failures"
exit $rc
