#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Playwright (never Playwright's own browser download).
set -u
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    && exit 0
  echo "WARNING: could not install chromium; the browser tests will be SKIPPED." >&2
  exit 0
fi
echo "WARNING: chromium is not installed and this user cannot install it (needs root and apt-get);" >&2
echo "         the browser tests will be SKIPPED. Install it with: sudo apt-get install chromium" >&2
