#!/usr/bin/env bash
# Mutation checks of the test suite: plant a known bug in a copy of the tree, run the tests
# that must catch it, and pass only if they FAIL, and in bounded time (a suite that hangs on
# the bug has not caught it).
#
#   scripts/mutants.sh lost-wakeup                 # host and sendfile tests, 600 s bound
#   scripts/mutants.sh lost-wakeup --bound 300 --filter 'SFBufHostTests'
#   scripts/mutants.sh lost-batch-wakeup --bound 120 --filter SleepTests
#   scripts/mutants.sh lockless-run-hit --bound 300 --filter 'RunsTests|PerfStressTests'
#
# Mutants:
#   lost-wakeup  The last-reference free (dropReferenceLocked in
#                Sources/SFBufCore/SFBufAllocator+parts.swift) no longer calls wakeWaiters():
#                a sleeper for a slot is never woken by the free that makes one. The core
#                tests trap on it at once; this runs the host and sendfile tests, whose waits
#                must all be bounded and fail naming what they waited for.
#   lost-batch-wakeup  The free of many slots at once (free(slots:) in
#                Sources/SFBufCore/SFBufAllocator.swift, which wakes sleepers once after
#                its loop) no longer calls wakeWaiters(): a batch's free leaves its sleepers
#                asleep. SleepTests.batchFreeWakes must catch it.
#   lockless-run-hit  The hit without the lock (referenceIfInUse in
#                Sources/SFBufCore/SFBufAllocator+parts.swift) ignores the lockedOnly flag
#                of a page run's slots, so it changes with a compare-and-swap a word that the
#                run's free writes with a plain store. RunsTests.oneCall (the invariant check
#                after a hit on a run's page) must catch it.
#
# The copy lives in .build-mutants/<mutant>/tree (tracked and untracked files, not .build);
# only files whose contents changed are copied again, so a second run builds incrementally.
# The build is not counted in the bound; the test run is, under `timeout`.
#
# CI runs it after scripts/test.sh (.ci/run). Measured on the 2-core VM: the debug build of
# the copy about 1 min; the host and sendfile tests under the mutant failed after 311 s (9
# tests caught it; each wait that gave up is listed with what it waited for). A test whose
# wait has given up once gives its later waits 2 s, so that a test fails within about one
# of its bounds; the tests that run synchronously hold one of the cooperative pool's few
# threads while they wait, which is most of the run time.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: scripts/mutants.sh lost-wakeup|lost-batch-wakeup|lockless-run-hit [--bound SECONDS]" \
    "[--filter REGEX]" >&2
  exit 2
}
mutant=${1:-}
[ -n "$mutant" ] || usage
shift
bound=600
filter='SFBufHostTests|SFSendfileTests'
while [ $# -gt 0 ]; do
  case "$1" in
    --bound) bound=${2:?}; shift 2 ;;
    --filter) filter=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done

root=$PWD
work=$root/.build-mutants/$mutant
tree=$work/tree
mkdir -p "$tree"

# Copies the working tree's files into $tree, leaving unchanged files (and their times) alone
# and removing files that are gone.
sync_tree() {
  local list=$work/files
  git ls-files -co --exclude-standard | grep -v '^\.build' | sort >"$list"
  while IFS= read -r f; do
    [ -f "$f" ] || continue
    if ! cmp -s "$f" "$tree/$f" 2>/dev/null; then
      mkdir -p "$tree/$(dirname "$f")"
      cp -p "$f" "$tree/$f"
    fi
  done <"$list"
  (cd "$tree" && find . -path ./.build -prune -o -type f -print | sed 's|^\./||' | sort) |
    comm -23 - "$list" | while IFS= read -r f; do rm -f "$tree/$f"; done
}

# Writes `file` with `new` contents only when they differ (an unchanged file is not rebuilt).
put() {
  local file=$1 new=$2
  cmp -s "$new" "$file" || cp "$new" "$file"
  rm -f "$new"
}

# Writes `file` in the copy as awk (the other arguments: its options and program) makes it
# from the original, not the copy (which may hold the mutant of the previous run). The
# program fails when the mutant does not apply: `why` says what it did not find; `done`
# says what it changed.
mutate() {
  local file=$1 why=$2 done=$3
  shift 3
  awk "$@" "$root/$file" >"$tree/$file.new" || {
    echo "mutants.sh: $mutant does not apply: $why (the code moved; update the mutant)" >&2
    rm -f "$tree/$file.new"
    exit 2
  }
  put "$tree/$file" "$tree/$file.new"
  echo "mutant $mutant: $done"
}

# Removes the one `wakeWaiters()` line of the function whose declaration matches `start`
# in `file`, in the copy.
remove_wakeup() {
  local file=$1 start=$2 what=$3
  mutate "$file" "no single wakeWaiters() call in $what in $file" \
    "removed the wakeWaiters() call of $what in $file" -v start="$start" '
    $0 ~ start { inside = 1 }
    inside && /^  }$/ { inside = 0 }
    inside && /^[[:space:]]*wakeWaiters\(\)[[:space:]]*$/ { removed++; next }
    { print }
    END { if (removed != 1) exit 3 }
  '
}

# Replaces the one line of `file` that is exactly `old` with `new`, in the copy.
replace_line() {
  local file=$1 old=$2 new=$3
  mutate "$file" "the line it changes is not in $file once" "changed, in $file: $old" \
    -v old="$old" -v new="$new" '
    $0 == old { print new; replaced++; next }
    { print }
    END { if (replaced != 1) exit 3 }
  '
}

case "$mutant" in
  lost-wakeup) ;;
  lost-batch-wakeup) ;;
  lockless-run-hit) ;;
  *)
    echo "unknown mutant '$mutant' (lost-wakeup, lost-batch-wakeup, lockless-run-hit)" >&2
    exit 2
    ;;
esac

sync_tree
case "$mutant" in
  lost-wakeup)
    remove_wakeup Sources/SFBufCore/SFBufAllocator+parts.swift 'func dropReferenceLocked[(]' \
      dropReferenceLocked ;;
  lost-batch-wakeup)
    remove_wakeup Sources/SFBufCore/SFBufAllocator.swift 'func free<.*>[(]slots:' 'free(slots:)' ;;
  lockless-run-hit)
    replace_line Sources/SFBufCore/SFBufAllocator+parts.swift \
      '    while SlotLine.references(w) > 0 && w & (SlotLine.mapping | SlotLine.lockedOnly) == 0 {' \
      '    while SlotLine.references(w) > 0 && w & SlotLine.mapping == 0 {' ;;
esac
cd "$tree"
echo "building the mutant in $tree (log: $work/build.log)"
if ! swift build --build-tests >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log"
  echo "mutants.sh: the mutant did not build" >&2
  exit 2
fi

# The test binary itself rather than `swift test`, which starts it in a process group of
# its own that `timeout` would not reach; line-buffered, so that the log shows how far a
# run that was stopped had got.
tests=$(swift build --show-bin-path)/sfbufPackageTests.xctest
log=$work/test.log
echo "running the tests matching '$filter' under the mutant, bounded to $bound s (log: $log)"
start=$(date +%s)
set +e
# (BoundedWaitTests feed the waits hangs of their own: not about the mutant.)
timeout -k 15 "$bound" stdbuf -oL -eL "$tests" --testing-library swift-testing \
  --filter "$filter" --skip BoundedWaitTests >"$log" 2>&1
status=$?
set -e
elapsed=$(($(date +%s) - start))
# The tests that failed, one line each (their issues are in the log).
failed=$(grep -E '^✘ Test "[^"]*"( with [0-9]+ test cases)? failed' "$log" |
  sed -E 's/^✘ Test //' || true)
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "mutants.sh: NOT CAUGHT: $mutant: the tests were still running after $bound s" \
    "(something waits without a bound); see $log" >&2
  exit 1
fi
if [ "$status" -eq 0 ]; then
  echo "mutants.sh: NOT CAUGHT: $mutant: the tests passed in $elapsed s" >&2
  exit 1
fi
echo "$failed" | sed 's/^/  caught by: /'
echo "  the waits that gave up:"
grep -oE 'gave up after [0-9.]+ s waiting .*' "$log" | sort | uniq -c | sed 's/^/  /' || true
echo "mutant $mutant caught: the tests failed (status $status) in $elapsed s (bound $bound s)"
