#!/usr/bin/env bash
# tests/test_compose.py checks docker/compose.yml with `docker compose config` or Debian's docker-compose (a small
# Python package: no daemon, no images). Installed when missing and we are root; otherwise that test is skipped.
set -u
if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's docker-compose for the compose file test..."
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      docker-compose >/dev/null; }; } && exit 0
  echo "WARNING: could not install docker-compose; the compose file test will be SKIPPED." >&2
  exit 0
fi
echo "WARNING: docker-compose is not installed and this user cannot install it (needs root and apt-get);" >&2
echo "         the compose file test will be SKIPPED. Install it with: sudo apt-get install docker-compose" >&2
