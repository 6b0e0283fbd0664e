#!/usr/bin/env bash
# Installs the system libraries healthpsi needs (libsodium for ristretto255) when they are missing.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libsodium\.so\.23'; then
  exit 0
fi
echo "libsodium23 is missing; installing it with apt-get" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libsodium23
