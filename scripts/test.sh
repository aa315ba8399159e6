#!/usr/bin/env bash
# The project's test command (`npm test`).
#
# Starts the real-engine test bed (scripts/cluster.sh up), runs `bun test` with
# the FLOCKER_TEST_* environment, and tears the test bed down again.
# If FLOCKER_TEST_DIR is set and $FLOCKER_TEST_DIR/env exists, that running
# cluster is reused and left running.
#
#   scripts/test.sh [bun test args...]      e.g. scripts/test.sh tests/e2e
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUN=./node_modules/.bin/bun
if [[ ! -x $BUN ]]; then
  echo "test.sh: $BUN not found; run 'npm ci' first" >&2
  exit 1
fi

bash scripts/system-deps.sh

started=0
if [[ -n ${FLOCKER_TEST_DIR:-} && -f $FLOCKER_TEST_DIR/env ]]; then
  envfile=$FLOCKER_TEST_DIR/env
  echo "test.sh: reusing running cluster in $FLOCKER_TEST_DIR" >&2
else
  export CLUSTER_DIR=${CLUSTER_DIR:-${FLOCKER_TEST_DIR:-/tmp/flk}}
  started=1
  cleanup() {
    local rc=$?
    trap - EXIT
    trap "" INT TERM  # do not interrupt the teardown
    bash scripts/cluster.sh down || echo "test.sh: cluster teardown failed" >&2
    return $rc
  }
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if ! bash scripts/cluster.sh up >/dev/null; then
    echo "test.sh: scripts/cluster.sh up failed" >&2
    exit 1
  fi
  envfile=$CLUSTER_DIR/env
fi

# shellcheck disable=SC1090
source "$envfile"

# Run bun in the background and `wait` for it, so that a SIGTERM/SIGINT sent
# to this script is handled at once (forwarded to bun, then the cluster is torn
# down by the EXIT trap) instead of after bun has finished.
"$BUN" test --timeout 120000 "$@" &
bunpid=$!
stop_bun() {
  kill -TERM "$bunpid" 2>/dev/null || true
  wait "$bunpid" 2>/dev/null || true
  exit "$1"
}
trap 'stop_bun 130' INT
trap 'stop_bun 143' TERM
wait "$bunpid"
rc=$?
trap - INT TERM
if ((started)); then echo "test.sh: bun test exited with $rc; tearing down the cluster" >&2; fi
exit $rc
