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
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
