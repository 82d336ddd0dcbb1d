#!/usr/bin/env bash
# Builds the kernel and boots it under QEMU with two CPUs; exits 0 when the self-test
# passes. With --mutant NAME, boots a build with one injected SFBufCore fault instead: that
# run must fail (this script then exits non-zero, having printed the stale read).
#
#   kernel/selftest.sh
#   kernel/selftest.sh --mutant no-shootdown      (also: no-local-invalidate, keep-cpuset)
#
# Environment: QEMU (default qemu-system-i386), SELFTEST_TIMEOUT (seconds, default 60).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
qemu=${QEMU:-qemu-system-i386}
limit=${SELFTEST_TIMEOUT:-60}

command -v "$qemu" >/dev/null || {
  echo "selftest.sh: $qemu not found (Debian: apt-get install qemu-system-x86)" >&2
  exit 2
}

start=$(date +%s.%N)
image=$("$here/build.sh" "$@" | tail -n 1)
built=$(date +%s.%N)
log="$(dirname "$image")/serial.log"

# isa-debug-exit: the kernel writes 0x10 (pass) or 0x11 (fail); QEMU exits 2 * v + 1.
set +e
timeout --foreground "$limit" "$qemu" -accel tcg -smp 2 -m 64M \
  -kernel "$image" -display none -no-reboot -serial stdio -monitor none \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 | tee "$log"
status=${PIPESTATUS[0]}
set -e
done=$(date +%s.%N)

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
echo "selftest.sh: build $(elapsed "$start" "$built") s," \
  "boot to verdict $(elapsed "$built" "$done") s, total $(elapsed "$start" "$done") s"
case "$status" in
  33) echo "selftest.sh: PASS ($image)"; exit 0 ;;
  35) echo "selftest.sh: FAIL reported by the kernel ($image)" ;;
  124) echo "selftest.sh: FAIL: no verdict within ${limit} s (hang)" ;;
  *) echo "selftest.sh: FAIL: QEMU exited with status $status (triple fault, or no exit device?)" ;;
esac
exit 1
