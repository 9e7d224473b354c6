#!/usr/bin/env bash
# Installs the oracles the tests need, when missing: qemu-img (qemu-utils), libvhdi's vhdiinfo
# (libvhdi-utils) and its Python binding (python3-libvhdi, used by scripts/vhdiexport.py because
# Debian ships no vhdiexport). Safe to run again: it only installs what is missing.
set -euo pipefail

missing=()
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v vhdiinfo >/dev/null 2>&1 || missing+=(libvhdi-utils)
/usr/bin/python3 -c 'import pyvhdi' >/dev/null 2>&1 || missing+=(python3-libvhdi)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing test oracles: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
