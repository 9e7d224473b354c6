#!/usr/bin/env bash
# Installs the oracles the tests need, when missing: qemu-img (qemu-utils), libvhdi's vhdiinfo
# (libvhdi-utils) and its Python binding (python3-libvhdi, used by scripts/vhdiexport.py because
# Debian ships no vhdiexport), the moto server (EBS direct APIs) and Azurite (page blobs). Safe to
# run again: it only installs what is missing.
set -euo pipefail

missing=()
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v vhdiinfo >/dev/null 2>&1 || missing+=(libvhdi-utils)
/usr/bin/python3 -c 'import pyvhdi' >/dev/null 2>&1 || missing+=(python3-libvhdi)

# moto (PyPI) serves the EBS direct APIs on 127.0.0.1 for the snapshot push/pull tests.
if ! command -v moto_server >/dev/null 2>&1; then
  echo "installing moto[server]==5.2.5 (pip)" >&2
  python3 -m pip install -q "moto[server]==5.2.5" flask flask-cors >/dev/null
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi

# Azurite (npm) serves the Blob API on 127.0.0.1 for the page-blob upload tests. 3.35.0 is the
# last release that runs on Node 20 (newer ones need Node 22). Node and npm come from Debian when
# missing.
if ! command -v azurite-blob >/dev/null 2>&1; then
  if ! command -v npm >/dev/null 2>&1; then missing+=(nodejs npm); fi
fi

install_azurite() {
  if ! command -v azurite-blob >/dev/null 2>&1; then
    echo "installing azurite@3.35.0 (npm)" >&2
    SUDO_NPM=""
    if [ "$(id -u)" -ne 0 ]; then SUDO_NPM="sudo"; fi
    $SUDO_NPM npm install -g --no-audit --no-fund --loglevel=error azurite@3.35.0 >/dev/null
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  install_azurite
  exit 0
fi
echo "installing test oracles: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_azurite
