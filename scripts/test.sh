#!/usr/bin/env bash
# The whole test suite: format lint, the Swift tests (core, host, simulated machine,
# sendfile, the HTTP server, SQLite, the tool), the Embedded build of the core, the DocC
# documentation, the bare-metal kernel under QEMU (and its mutant, which must be caught), and
# the tool's handling of bad settings.
#
# Needs qemu-system-i386, socat, nc, sqlite3, libsqlite3-dev, curl, wrk and nginx; as root on Debian
# it installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

need=()
command -v qemu-system-i386 >/dev/null || need+=(qemu-system-x86)
command -v socat >/dev/null || need+=(socat)
command -v nc >/dev/null || need+=(netcat-openbsd)
command -v sqlite3 >/dev/null || need+=(sqlite3)
[ -f /usr/include/sqlite3ext.h ] || need+=(libsqlite3-dev)
command -v curl >/dev/null || need+=(curl)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    step "installing ${need[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]} (install them, e.g. apt-get install ${need[*]})" >&2
    exit 2
  fi
fi

step "swift format lint"
swift format lint --strict -r Package.swift Sources Tests kernel/Sources \
  Benchmarks/HummingbirdServe

step "Embedded build of SFBufCore (i686-unknown-none-elf)"
swift build --target SFBufCore --scratch-path .build-embedded --triple i686-unknown-none-elf \
  -Xswiftc -enable-experimental-feature -Xswiftc Embedded -Xswiftc -wmo

step "swift test"
mkdir -p .build
# The SQLite extension as the stock shell loads it (its tests run that shell).
swift build --product SFBufSQLite
swift test 2>&1 | tee .build/swift-test.log
swift_tests=$(grep -oE 'Test run with [0-9]+ tests' .build/swift-test.log | grep -oE '[0-9]+' | tail -1)

step "documentation: the DocC catalogs of SFBufHost and SFBufCore, warnings are errors"
swift package generate-documentation --target SFBufHost --target SFBufCore \
  --warnings-as-errors 2>&1 | tail -3

step "bare-metal kernel self-test (QEMU, 2 CPUs)"
kernel/selftest.sh

step "bare-metal kernel, mutant without the shootdown on a shared hit: must be caught"
set +e
kernel/selftest.sh --mutant no-shootdown >.build/mutant.log 2>&1
status=$?
set -e
if [ "$status" -ne 1 ] || ! grep -q "stale read" .build/mutant.log; then
  cat .build/mutant.log
  echo "the mutant kernel was not caught (status $status)" >&2
  exit 1
fi
grep -m 3 "stale read" .build/mutant.log

step "sfbuf refuses bad settings"
swift build --product sfbuf
for bad in abc 0 -5 99999999; do
  set +e
  out=$(SFBUF_NSFBUFS="$bad" .build/debug/sfbuf run --seconds 0.1 2>&1)
  status=$?
  set -e
  if [ "$status" -eq 0 ] || ! grep -q "SFBUF_NSFBUFS" <<<"$out"; then
    echo "SFBUF_NSFBUFS=$bad: status $status, output: $out" >&2
    exit 1
  fi
  echo "SFBUF_NSFBUFS=$bad: refused ($status): $(head -1 <<<"$out")"
done
SFBUF_NSFBUFS=64 .build/debug/sfbuf run --seconds 0.2 --threads 2 | grep "sfbufs in use"
SFBUF_NSFBUFS=64 .build/debug/sfbuf run --seconds 0.2 --threads 2 --policy batched | grep "0 wrong"

# Swift Testing's tests, plus five checks here: the documentation, the kernel self-test,
# its mutant caught, the refusal of bad settings, and a small run.
echo
echo "tests: $((swift_tests + 5)) passed, 0 failed"
