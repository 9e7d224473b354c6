#!/usr/bin/env bash
# Installs the oracles the tests need, when missing: qemu-img (qemu-utils), libvhdi's vhdiinfo
# (libvhdi-utils) and its Python binding (python3-libvhdi, used by scripts/vhdiexport.py because
# Debian ships no vhdiexport) from Debian; the moto server (EBS direct APIs) and Azurite (page
# blobs) at pinned versions into .test-tools/ of this checkout (ignored by git): a virtual
# environment (.test-tools/venv) and a local node_modules (.test-tools/node). The tests use those,
# never a moto_server or azurite-blob on PATH, and nothing is installed globally with pip or npm,
# so other versions the user has installed are left alone. Safe to run again: it installs only
# what is missing or not at its pinned version, and takes about a second when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
# 3.35.0 is the last Azurite release that runs on Node 20 (newer ones need Node 22).
AZURITE_VERSION=3.35.0
TOOLS="$PWD/.test-tools"
VENV="$TOOLS/venv"
NODE_PREFIX="$TOOLS/node"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_updated=""
apt_install() {
  echo "installing from Debian: $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v vhdiinfo >/dev/null 2>&1 || missing+=(libvhdi-utils)
/usr/bin/python3 -c 'import pyvhdi' >/dev/null 2>&1 || missing+=(python3-libvhdi)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

# moto (PyPI) serves the EBS direct APIs on 127.0.0.1 for the snapshot push/pull tests.
moto_ok() {
  [ -x "$VENV/bin/moto_server" ] &&
    [ "$("$VENV/bin/python" -c 'import moto, flask, flask_cors; print(moto.__version__)' 2>/dev/null)" = "$MOTO_VERSION" ] &&
    "$VENV/bin/moto_server" --help >/dev/null 2>&1
}
make_venv() {
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  # The venv is made with the python3 found on PATH. Debian's python3 needs python3-venv (or
  # python3.X-venv) for ensurepip; then the same command is tried again. A python3 that still
  # cannot make one (or is missing ensurepip for good) falls back to Debian's /usr/bin/python3.
  if python3 -m venv "$VENV" >/dev/null 2>&1; then return; fi
  rm -rf "$VENV"
  local pv
  pv="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$(python3 -c 'import sys; print(sys.base_prefix)')" = /usr ]; then
    apt_install python3-venv "python$pv-venv" || apt_install python3-venv
    if python3 -m venv "$VENV" >/dev/null 2>&1; then return; fi
  elif [ -x /usr/bin/python3 ]; then
    /usr/bin/python3 -m venv "$VENV" >/dev/null 2>&1 && return
    rm -rf "$VENV"
    apt_install python3-venv
    /usr/bin/python3 -m venv "$VENV" >/dev/null 2>&1 && return
  fi
  echo "cannot create a Python virtual environment at $VENV (python3 -m venv)" >&2
  exit 1
}
if ! moto_ok; then
  echo "installing moto[server]==$MOTO_VERSION into $VENV" >&2
  # A venv whose python no longer runs (its interpreter removed, the checkout moved) is made anew.
  "$VENV/bin/python" -c '' >/dev/null 2>&1 || make_venv
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "moto[server]==$MOTO_VERSION" flask flask-cors >/dev/null
  if ! moto_ok; then
    # Entry points with a stale interpreter path: make the venv anew once.
    make_venv
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      "moto[server]==$MOTO_VERSION" flask flask-cors >/dev/null
    moto_ok || { echo "moto $MOTO_VERSION in $VENV does not run" >&2; exit 1; }
  fi
fi

# Azurite (npm) serves the Blob API on 127.0.0.1 for the page-blob upload tests.
azurite_version() {
  node -p "require(process.argv[1]).version" "$NODE_PREFIX/node_modules/azurite/package.json" 2>/dev/null
}
if [ "$(azurite_version)" != "$AZURITE_VERSION" ] || [ ! -x "$NODE_PREFIX/node_modules/.bin/azurite-blob" ]; then
  echo "installing azurite@$AZURITE_VERSION into $NODE_PREFIX" >&2
  mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --save-exact --loglevel=error \
    "azurite@$AZURITE_VERSION" >/dev/null
  if [ "$(azurite_version)" != "$AZURITE_VERSION" ]; then
    echo "azurite $AZURITE_VERSION did not install into $NODE_PREFIX" >&2
    exit 1
  fi
fi

# ---- boot check (issue 13) ---------------------------------------------------------------
# `ec2azure boot-check` and its tests boot disks under qemu-system-x86_64 (SeaBIOS, and OVMF for
# UEFI); `sample --bootable` builds the disks with mtools and syslinux. Those come from Debian.
# The samples' kernel (linux-image-amd64), busybox-static and systemd-boot-efi are only data
# for the disk image: they are downloaded (apt-get download) and unpacked with dpkg-deb into
# .test-tools/boot/ (the package's own tree: boot/vmlinuz-*, bin/busybox,
# usr/lib/systemd/boot/efi/systemd-bootx64.efi), never installed. Debian keeps one version of
# each in its archive, so they are the archive's current ones, written to
# .test-tools/boot/VERSIONS. qemu-system-x86 must be the same version as an installed
# qemu-utils (Debian's packages require it, and apt would otherwise remove a newer qemu-utils
# from backports): it is installed at that version, from bookworm-backports through a
# temporary source list when the version is a backport; apt is never allowed to remove a
# package here (--no-remove).
BOOT_TOOLS="$TOOLS/boot"
boot_apt() {
  # apt-get install with --no-remove: a conflict fails loudly instead of removing packages.
  echo "installing from Debian: $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  $SUDO apt-get install -y -qq --no-install-recommends --no-remove "$@" >/dev/null
}
boot_apt_backports() {
  # The same, with bookworm-backports (or the running release's backports) added for this
  # call only, in a private apt state folder.
  local codename bpo
  codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
  bpo="$TOOLS/apt-backports"
  mkdir -p "$bpo/lists/partial" "$bpo/archives/partial"
  printf 'deb http://deb.debian.org/debian %s main\ndeb http://deb.debian.org/debian %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\ndeb http://deb.debian.org/debian %s-backports main\n' \
    "$codename" "$codename" "$codename" "$codename" >"$bpo/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$bpo/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::lists=$bpo/lists" -o "Dir::Cache::archives=$bpo/archives")
  echo "installing from Debian $codename-backports: $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get "${opts[@]}" update -qq
  $SUDO apt-get "${opts[@]}" install -y -qq --no-install-recommends --no-remove \
    -t "$codename-backports" "$@" >/dev/null
}

boot_missing=()
command -v mformat >/dev/null 2>&1 || boot_missing+=(mtools)
command -v syslinux >/dev/null 2>&1 || boot_missing+=(syslinux)
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || boot_missing+=(syslinux-common)
[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || [ -f /usr/share/OVMF/OVMF_CODE.fd ] || boot_missing+=(ovmf)
if [ ${#boot_missing[@]} -gt 0 ]; then boot_apt "${boot_missing[@]}"; fi
utils_version="$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)"
system_version="$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)"
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 ||
  { [ -n "$utils_version" ] && [ "$utils_version" != "$system_version" ]; }; then
  if [ -z "$utils_version" ]; then
    boot_apt qemu-system-x86
  elif [[ "$utils_version" == *bpo* ]]; then
    boot_apt_backports "qemu-system-x86=$utils_version" "qemu-system-common=$utils_version" \
      "qemu-system-data=$utils_version" seabios
  else
    boot_apt "qemu-system-x86=$utils_version"
  fi
fi

boot_extract() {
  # boot_extract PACKAGE PATH-IN-PACKAGE...: unpack those paths of PACKAGE's current .deb.
  local pkg="$1"
  shift
  mkdir -p "$BOOT_TOOLS/debs"
  rm -f "$BOOT_TOOLS/debs/${pkg}"_*.deb
  (cd "$BOOT_TOOLS/debs" && apt-get download -q "$pkg" 2>/dev/null) ||
    { $SUDO apt-get update -qq && apt_updated=1 && (cd "$BOOT_TOOLS/debs" && apt-get download -q "$pkg"); }
  local deb
  deb="$(ls "$BOOT_TOOLS/debs/${pkg}"_*.deb)"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$BOOT_TOOLS" --wildcards "$@"
  echo "$pkg $(dpkg-deb -f "$deb" Version)" >>"$BOOT_TOOLS/VERSIONS"
  rm -f "$deb"
}
if ! ls "$BOOT_TOOLS"/boot/vmlinuz-* >/dev/null 2>&1; then
  # linux-image-amd64 only depends on the versioned kernel package: fetch that one.
  kernel_pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  if [ -z "$kernel_pkg" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
    kernel_pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  fi
  echo "extracting the kernel of $kernel_pkg into $BOOT_TOOLS" >&2
  boot_extract "$kernel_pkg" './boot/vmlinuz-*'
fi
if [ ! -x "$BOOT_TOOLS/bin/busybox" ]; then
  echo "extracting busybox-static into $BOOT_TOOLS" >&2
  boot_extract busybox-static ./bin/busybox
fi
if [ ! -f "$BOOT_TOOLS/usr/lib/systemd/boot/efi/systemd-bootx64.efi" ]; then
  echo "extracting systemd-boot-efi into $BOOT_TOOLS" >&2
  boot_extract systemd-boot-efi ./usr/lib/systemd/boot/efi/systemd-bootx64.efi
fi
# ---- end of boot check ---------------------------------------------------------------------

# ---- report screenshot (issue 12) ----------------------------------------------------------
# The rehearsal report's test renders report.html with headless Chromium to a PNG. Debian's
# `chromium` is installed with --no-remove (a conflict fails loudly instead of removing
# packages). Debian keeps one chromium per suite (security updates replace it), so no fixed
# version can be pinned: chromium and chromium-common are pinned to the same candidate version
# (apt would otherwise be free to pair a chromium with another chromium-common), and the
# installed version is written to .test-tools/chromium.version. The tests find it as
# $EC2AZURE_CHROMIUM, else `chromium` or `chromium-browser` on PATH (scripts/test.sh sets
# EC2AZURE_CHROMIUM to the one found here).
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  # The lists are refreshed first: a stale list names a version the archive no longer holds.
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  chromium_version="$(apt-cache policy chromium | awk '/Candidate:/ {print $2; exit}')"
  if [ -z "$chromium_version" ] || [ "$chromium_version" = "(none)" ]; then
    echo "Debian's archive offers no chromium package here" >&2
    exit 1
  fi
  echo "installing chromium $chromium_version (about 300 MB with its libraries)" >&2
  boot_apt "chromium=$chromium_version" "chromium-common=$chromium_version"
fi
mkdir -p "$TOOLS"
chromium_bin="$(command -v chromium || command -v chromium-browser)"
"$chromium_bin" --version >"$TOOLS/chromium.version" 2>/dev/null ||
  { echo "$chromium_bin does not run" >&2; exit 1; }
# ---- end of report screenshot --------------------------------------------------------------
