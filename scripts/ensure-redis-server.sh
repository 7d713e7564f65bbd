#!/usr/bin/env bash
# Makes sure redis-server is on PATH for the integration tests: installs Debian's package when it is missing and
# this machine can (root and apt-get). The package's own service is kept from starting: tests start their own
# servers on free ports and never use one they did not start.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server" >&2
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  status=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server; } >&2 || status=$?
  if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
  if [ "$status" -eq 0 ] && command -v redis-server >/dev/null 2>&1; then
    redis-server --version >&2
    exit 0
  fi
  echo "could not install redis-server (apt-get exit $status)" >&2
else
  echo "redis-server not found, and this machine cannot install it (needs root and apt-get)" >&2
fi

if [ "${CI:-}" = "true" ]; then
  echo "CI=true: integration tests need redis-server; failing" >&2
  exit 1
fi
echo "WARNING: integration tests against real redis-server will be SKIPPED" >&2
exit 0
