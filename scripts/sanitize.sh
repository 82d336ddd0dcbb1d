#!/usr/bin/env bash
# The Swift tests under a sanitizer, in a build folder of their own (.build-tsan,
# .build-asan), so that the ordinary build stays as it is.
#
#   scripts/sanitize.sh thread                       # the whole suite under ThreadSanitizer
#   scripts/sanitize.sh address                      # ... under AddressSanitizer
#   scripts/sanitize.sh thread --filter 'SFBufCoreTests|SFBufHostTests'   # a part
#
# Fails on any sanitizer report, even one that the runtime would let the run survive.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:?usage: scripts/sanitize.sh thread|address [swift test options]}
shift
case "$kind" in
  thread) scratch=.build-tsan ;;
  address) scratch=.build-asan ;;
  *) echo "unknown sanitizer '$kind' (thread or address)" >&2; exit 2 ;;
esac
mkdir -p "$scratch"
log="$scratch/sanitize-test.log"
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="halt_on_error=1 detect_leaks=0 ${ASAN_OPTIONS:-}"
swift build --build-tests --sanitize="$kind" --scratch-path "$scratch"
set +e
swift test --skip-build --sanitize="$kind" --scratch-path "$scratch" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
if grep -qE "WARNING: (ThreadSanitizer|AddressSanitizer)|ERROR: AddressSanitizer" "$log"; then
  echo "sanitize.sh: the $kind sanitizer reported a problem (see $log)" >&2
  exit 1
fi
exit "$status"
