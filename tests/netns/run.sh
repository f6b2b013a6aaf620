#!/usr/bin/env bash
# Multi-host reliability harness for `gladius node` (issue 7).
#
#   tests/netns/run.sh [SCENARIO...]          scenarios 1 2 3 5 by default (CI set)
#   tests/netns/run.sh 4                      churn
#   tests/netns/run.sh 6                      NAT routers (cone, symmetric), rebinding
#   tests/netns/run.sh 7                      NAT matrix: dial by key, punch, relay
#   tests/netns/run.sh 8                      a full socket send buffer (tbf-slowed link)
#   tests/netns/run.sh soak --duration 600    churn + loss soak (not in CI)
#   options after the scenarios: --out FILE   (JSON summary)
#
# Needs root, `ip netns`, nftables and python3. Uses $GLADIUS_BIN if set,
# else builds `cargo build --release -p gladius-cli --locked --features relay-faults`. It never
# passes silently: if it cannot run here it says why and exits 2.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

cannot() {
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  echo "!!! netns reliability harness CANNOT RUN: $*" >&2
  echo "!!! (nothing was tested; this is a failure, not a pass)" >&2
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!" >&2
  exit 2
}

[ "$(id -u)" = 0 ] || cannot "must run as root (network namespaces, nftables)"
command -v ip >/dev/null || cannot "\`ip\` (iproute2) not installed"
command -v nft >/dev/null || cannot "\`nft\` (nftables) not installed"
command -v python3 >/dev/null || cannot "python3 not installed"
for s in "$@"; do
  if [ "$s" = 8 ]; then
    command -v tc >/dev/null || cannot "\`tc\` (iproute2) not installed: scenario 8 slows a link with a tbf qdisc"
  fi
  if [ "$s" = 6 ]; then
    command -v conntrack >/dev/null || cannot "\`conntrack\` (package conntrack) not installed: scenario 6 flushes a NAT router's mappings"
  fi
done
probe="gnt-probe-$$"
ip netns add "$probe" 2>/dev/null || cannot "\`ip netns add\` fails here (no netns support?)"
trap 'ip netns del "$probe" 2>/dev/null || true' EXIT
{ ip netns exec "$probe" nft 'add table inet probe' &&
  ip netns exec "$probe" nft 'add chain inet probe input { type filter hook input priority 0; policy accept; }' &&
  ip netns exec "$probe" nft 'add rule inet probe input udp dport 7000 numgen random mod 100 < 1 counter drop'; } \
  || cannot "nftables does not work inside a namespace (numgen rule refused)"
ip -n "$probe" link add vprobe type veth peer name vprobe1 \
  || cannot "cannot create veth pairs inside a namespace"
ip -n "$probe" link add bprobe type bridge || cannot "cannot create a bridge inside a namespace"
ip netns del "$probe"
trap - EXIT

if [ -z "${GLADIUS_BIN:-}" ]; then
  # relay-faults: only adds the hidden --relay-faults (scenario 7's tampering relay).
  (cd "$root" && cargo build --release -p gladius-cli --locked --features relay-faults)
  GLADIUS_BIN="${CARGO_TARGET_DIR:-$root/target}/release/gladius"
fi
[ -x "$GLADIUS_BIN" ] || cannot "no gladius binary at $GLADIUS_BIN"
export GLADIUS_BIN

if [ "${1:-}" = soak ]; then
  shift
  exec python3 "$here/harness.py" soak "$@"
fi
exec python3 "$here/harness.py" run "$@"
