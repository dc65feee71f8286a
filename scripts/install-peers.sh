#!/usr/bin/env bash
# Installs the real peers the tests talk to, from Debian's packages, when they are missing.
#   bash scripts/install-peers.sh            the default list below (what `make test` needs)
#   bash scripts/install-peers.sh PKG...     only these packages
# Nothing is started here, and nothing is left running: tests start their own copies on free
# loopback ports with temporary data folders. Installing as root when something is missing; when all
# packages are present apt is not touched at all (no root needed).
set -euo pipefail

default=(
  prometheus               # /usr/bin/prometheus: type: prometheus tests
  prometheus-node-exporter # /usr/bin/prometheus-node-exporter: type: scrape against node_exporter
  monitoring-plugins       # /usr/lib/nagios/plugins/check_*: type: command tests
  systemd-journal-remote   # writes real .journal files for the logs source's journald tests
  prometheus-alertmanager  # /usr/bin/prometheus-alertmanager + amtool: API v2 / amtool tests, ingest benchmark
  chromium                 # /usr/bin/chromium: the web UI's browser tests and screenshots (Playwright drives it)
  fonts-liberation         # readable text in headless Chromium's screenshots (--no-install-recommends skips fonts)
)
if [ $# -gt 0 ]; then
  wanted=("$@")
else
  wanted=("${default[@]}")
fi

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

need=()
for pkg in "${wanted[@]}"; do
  installed "$pkg" || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-peers: missing Debian packages: ${need[*]} (and no apt-get here); install them by hand" >&2
  exit 1
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-peers: missing Debian packages: ${need[*]}" >&2
  echo "install-peers: run as root:  sudo apt-get install --no-install-recommends ${need[*]}" >&2
  echo "install-peers: (or: sudo bash $0 ${need[*]})" >&2
  exit 1
fi

# Debian's maintainer scripts start the packages' services. The tests do not want them (they start
# their own copies), and in containers there may be no init to ask: forbid service starts for the
# duration of the install with a temporary policy-rc.d, unless the machine already has one.
policy=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  ours=1
fi
cleanup() { if [ "$ours" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "install-peers: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

still=()
for pkg in "${need[@]}"; do
  installed "$pkg" || still+=("$pkg")
done
if [ ${#still[@]} -gt 0 ]; then
  echo "install-peers: apt-get did not install: ${still[*]}" >&2
  exit 1
fi
