#!/usr/bin/env bash
# Install the system packages the test suite runs for real, when they are missing.
# Arguments are commands that Debian packages of the same name provide (chromium: the browser
# tests drive /usr/bin/chromium with Playwright, which must not download a browser of its own;
# nginx: the deployment test runs /usr/sbin/nginx, which is not on every user's PATH).
set -euo pipefail
missing=()
for pkg in "$@"; do
  command -v "$pkg" >/dev/null 2>&1 || [ -x "/usr/sbin/$pkg" ] || [ -x "/sbin/$pkg" ] \
    || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  # The tests start their own servers: keep the packages' services (nginx on port 80) from
  # starting at install time, where they could fail the install or hold ports.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  # Wait for another apt run instead of failing on its lock.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"
fi
