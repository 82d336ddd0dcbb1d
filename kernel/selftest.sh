#!/usr/bin/env bash
# Builds the kernel and boots it under QEMU with two CPUs; exits 0 when the self-test
# passes. With --mutant NAME, boots a build with one injected SFBufCore fault instead: that
# run must fail (this script then exits non-zero, having printed the stale read).
#
#   kernel/selftest.sh
#   kernel/selftest.sh --mutant no-shootdown      (also: no-local-invalidate, keep-cpuset)
#
# The image boots twice, once per TCG mode: "single" runs both virtual CPUs interleaved in
# one host thread (deterministic, insensitive to host load: `pause` hands over to the other
# CPU), "multi" runs each in its own host thread, truly in parallel. Both must pass.
#
# Exit status: 0 pass; 1 the self-test failed (kernel verdict, hang, or crash); 2 the image
# could not be built or QEMU is missing. A CI step that expects a mutant to be caught should
# check for 1 (and for "stale read" in the output), not just for non-zero.
#
# Environment: QEMU (default qemu-system-i386), SELFTEST_TIMEOUT (seconds per boot,
# default 60), SELFTEST_TCG (default "single multi").
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
qemu=${QEMU:-qemu-system-i386}
limit=${SELFTEST_TIMEOUT:-60}
modes=${SELFTEST_TCG:-single multi}

command -v "$qemu" >/dev/null || {
  echo "selftest.sh: $qemu not found (Debian: apt-get install qemu-system-x86)" >&2
  exit 2
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

start=$(now)
if ! image=$("$here/build.sh" "$@" | tail -n 1); then
  echo "selftest.sh: the build failed" >&2
  exit 2
fi
built=$(now)
echo "selftest.sh: built $image in $(elapsed "$start" "$built") s"

verdict=0
for mode in $modes; do
  log="$(dirname "$image")/serial-$mode.log"
  echo "selftest.sh: booting with -accel tcg,thread=$mode -smp 2"
  booted=$(now)
  # isa-debug-exit: the kernel writes 0x10 (pass) or 0x11 (fail); QEMU exits 2 * v + 1.
  set +e
  timeout --foreground "$limit" "$qemu" -accel "tcg,thread=$mode" -smp 2 -m 64M \
    -kernel "$image" -display none -no-reboot -serial stdio -monitor none \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  took=$(elapsed "$booted" "$(now)")
  case "$status" in
    33) echo "selftest.sh: $mode: PASS, boot to verdict $took s" ;;
    35) echo "selftest.sh: $mode: FAIL reported by the kernel, after $took s"; verdict=1 ;;
    124) echo "selftest.sh: $mode: FAIL: no verdict within $limit s (hang)"; verdict=1 ;;
    *) echo "selftest.sh: $mode: FAIL: QEMU exited with $status (triple fault?)"; verdict=1 ;;
  esac
done

echo "selftest.sh: build $(elapsed "$start" "$built") s, total $(elapsed "$start" "$(now)") s"
if [ "$verdict" = 0 ]; then echo "selftest.sh: PASS"; else echo "selftest.sh: FAIL"; fi
exit "$verdict"
