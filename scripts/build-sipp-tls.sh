#!/usr/bin/env bash
# Build sipp with TLS (`-t l1`) and install it as /usr/local/bin/sipp-tls.
#
# Debian's sip-tester (3.6.1) is built without OpenSSL: `sipp -t l1` answers "To use a TLS
# transport you must compile SIPp with OpenSSL". The TLS end-to-end tests
# (tests/e2e/test_tls.py) look for `sipp-tls` on the PATH (or $SIPP_TLS) and are skipped
# without it. Needs cmake, g++, libssl-dev and libncurses-dev (Debian packages).
#
#   scripts/build-sipp-tls.sh [SOURCE]   SOURCE: a sipp checkout or unpacked release
#                                        (default: a shallow clone of v3.7.7 from GitHub)
set -euo pipefail

SOURCE=${1:-}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [[ -z $SOURCE ]]; then
    git clone --depth 1 --branch v3.7.7 https://github.com/SIPp/sipp.git "$WORK/sipp"
    SOURCE=$WORK/sipp
fi
cp -a "$SOURCE/." "$WORK/build"
cd "$WORK/build"
# A checkout without its tags (or an archive) has only the stub version.h, which refuses to
# compile: name the version ourselves.
if ! git describe --tags >/dev/null 2>&1; then
    printf '#ifndef SIPP_VERSION\n#define SIPP_VERSION "v3.7.7"\n#endif\n' >include/version.h
fi
cmake . -DUSE_SSL=1 -DUSE_PCAP=0 -DUSE_SCTP=0 >/dev/null
make -j"$(nproc)" sipp >/dev/null
install -m 755 sipp /usr/local/bin/sipp-tls
/usr/local/bin/sipp-tls -v | sed -n 2p
