#!/usr/bin/env bash
# Makes sure the programs the integration tests use are on PATH, installing Debian's packages for the missing
# ones when this machine can (root and apt-get), with one `apt-get update` for all of them:
#
#   redis-server  required: the tests start their own servers on free loopback ports and never use one they did
#                 not start. The package's own service is kept from starting.
#   iptables      optional: the fault harness cuts a worker off in a network namespace with it (a real
#                 partition); without it, a proxy that drops the traffic stands in, and the test log says so.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "not found: ${missing[*]}: installing Debian's packages" >&2
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
  fi
  status=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/dev/null || status=$?
  if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
  [ "$status" -eq 0 ] || echo "could not install ${missing[*]} (apt-get exit $status)" >&2
else
  echo "not found: ${missing[*]}; this machine cannot install them (needs root and apt-get)" >&2
fi

if command -v redis-server >/dev/null 2>&1; then
  redis-server --version >&2
  exit 0
fi
if [ "${CI:-}" = "true" ]; then
  echo "CI=true: integration tests need redis-server; failing" >&2
  exit 1
fi
echo "WARNING: integration tests against real redis-server will be SKIPPED" >&2
exit 0
