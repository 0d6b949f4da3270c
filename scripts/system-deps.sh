#!/usr/bin/env bash
# Install the system packages the test suite runs for real, when they are missing.
# Arguments are commands that Debian packages of the same name provide (chromium: the browser
# tests drive /usr/bin/chromium with Playwright, which must not download a browser of its own).
set -euo pipefail
missing=()
for pkg in "$@"; do
  command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  # Wait for another apt run instead of failing on its lock.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}"
fi
