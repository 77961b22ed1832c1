#!/usr/bin/env bash
# Install the system programs that the tests and benchmarks drive for real
# (DESIGN.md: "Real parts, not stand-ins"), as Debian packages.
#
# Idempotent and quick: when every program is already there it exits without
# touching apt. Otherwise, as root (or through passwordless sudo), one
# `apt-get update` and one `apt-get install -y --no-install-recommends` with
# only the missing packages.
#
#   scripts/install-system-deps.sh          install what is missing
#   scripts/install-system-deps.sh --check  list what is missing, exit 1 if any
set -euo pipefail

# What to look for -> the Debian package that provides it. The probe is a
# command name (searched in PATH and the sbin directories, where daemons such
# as mariadbd and keepalived live) or an absolute path (for packages without
# a command, e.g. a library). Several probes may name the same package.
DEPS=(
    "sipp                      sip-tester"
    "stunnel4                  stunnel4"
    "mariadbd                  mariadb-server"
    "/usr/lib/galera/libgalera_smm.so galera-4"
    "rsync                     rsync"
    "keepalived                keepalived"
    "nft                       nftables"
    "arping                    iputils-arping"
    "ping                      iputils-ping"
    "systemd-analyze           systemd"
    "tshark                    tshark"
    "sngrep                    sngrep"
    "rtpengine                 rtpengine-daemon"
    "chromium                  chromium"
    "fail2ban-regex            fail2ban"
    "etcd                      etcd-server"
    "etcdctl                   etcd-client"
    "gcc                       gcc"
)

present() {
    local probe=$1
    if [[ $probe == /* ]]; then
        [[ -e $probe ]]
        return
    fi
    PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" command -v "$probe" >/dev/null 2>&1
}

missing=()
for entry in "${DEPS[@]}"; do
    read -r probe package <<<"$entry"
    if ! present "$probe"; then
        # Keep each package once, in table order.
        [[ " ${missing[*]-} " == *" $package "* ]] || missing+=("$package")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ ${1-} == --check ]]; then
    echo "missing system packages: ${missing[*]}" >&2
    exit 1
fi

as_root=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "install-system-deps: need root to install: ${missing[*]}" >&2
        echo "  run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi

echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
