#!/usr/bin/env bash
# Installs the system packages healthpsi needs when they are missing: libsodium (ristretto255) and
# Chromium (the browser tests drive Debian's Chromium through Playwright).
set -euo pipefail
missing=()
if ! ldconfig -p 2>/dev/null | grep -q 'libsodium\.so\.23'; then
  missing+=(libsodium23)
fi
if [ ! -x /usr/bin/chromium ]; then
  missing+=(chromium)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "${missing[*]} missing; installing with apt-get" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
