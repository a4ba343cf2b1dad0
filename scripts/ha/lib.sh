# Helpers shared by the HA namespace tests (test-ha.sh, test-bgp.sh, test-ecmp.sh): sourced,
# not run.

# skip REASON: this machine cannot run the test. Exit 0 ("skipped"), or fail when
# SPRAY_REQUIRE_ALL=1 (CI installs everything, so a skip there is a broken set-up).
skip() {
    if [ "${SPRAY_REQUIRE_ALL:-0}" = 1 ]; then
        echo "error: $* (SPRAY_REQUIRE_ALL=1)" >&2
        exit 1
    fi
    echo "skipped: $*"
    exit 0
}

# in_ns NS COMMAND...: runs COMMAND in network namespace NS.
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 50 ms until it succeeds; on
# timeout says what it waited for, sets KEEP=1 (the caller's cleanup keeps the logs) and
# returns 1.
wait_for() {
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 20; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "error: timed out after ${secs}s waiting for $what" >&2
    KEEP=1
    return 1
}
