#!/usr/bin/env bash
# Installs the real peers the tests talk to, from Debian's packages, when they are missing.
# Nothing is started here: tests start their own copies on free loopback ports.
set -euo pipefail
need=()
# (issue 2 needs no Debian peer; later issues add prometheus, node_exporter, amtool, monitoring-plugins.)
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-peers: missing ${need[*]} and not root; install them with apt-get" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
