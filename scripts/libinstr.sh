#!/usr/bin/env bash
# The library's instructions per page of a run, counted by valgrind's callgrind over
# `sfbuf bench pages --workload seq --peer batched --threads 1 --trials 3`: the instructions
# executed inside `SFBufBatch.map` (the look-ups, claims, the `mmap` call's user-space side,
# publishing, the batch's entries) and the run's free (the window's `free(slots:)`, and
# `SFBufBatch.freeEntries` where it is not inlined), callees included, over the pages the
# window scanned (3 x 8192, plus the warm-up's 2000).
#
#   scripts/libinstr.sh                           # .build/release/sfbuf
#   scripts/libinstr.sh path/to/sfbuf             # another build
#   LIBINSTR_SYMBOLS=1 scripts/libinstr.sh        # also each library symbol's own count
#
# Unlike time, the count does not swing with this VM's load: one run per build tells two
# builds apart (they differ by what they execute, not by when). It counts no cache miss
# and no time in the kernel, so it is a measure of the code, not of the wall clock: check a
# change with scripts/libcost.sh too. Needs valgrind (Debian: valgrind), which cannot read
# Swift 6.3's debug information: the script runs a copy stripped of it, beside the build (so
# that the copy finds the libraries the build finds through its run path).
set -euo pipefail

bin=${1:-.build/release/sfbuf}
[[ -x $bin ]] || { echo "libinstr.sh: no executable at $bin (swift build -c release first)" >&2; exit 2; }
command -v valgrind > /dev/null || { echo "libinstr.sh: valgrind is not installed" >&2; exit 2; }

work=$(mktemp -d)
stripped="$(dirname "$bin")/.libinstr-$$"
trap 'rm -rf "$work" "$stripped"' EXIT
objcopy --strip-debug "$bin" "$stripped"
valgrind --tool=callgrind --callgrind-out-file="$work/out" \
  "$stripped" bench pages --workload seq --peer batched --threads 1 --trials 3 \
  > "$work/bench.txt" 2> "$work/valgrind.txt" || {
  echo "libinstr.sh: the bench failed under valgrind:" >&2
  tail -20 "$work/valgrind.txt" >&2
  exit 1
}
pages=$((3 * 8192 + 2000))
# SFBufBatch.map with its callees; the window's free(slots:) with its callees (however the
# batch's free reaches it: freeEntries may be inlined into removeAll and the bench); and
# freeEntries' own instructions, where it is a function of its own.
{
  callgrind_annotate --threshold=100 --inclusive=yes "$work/out" 2> /dev/null \
    | awk '/SFBufHost0A5BatchV3map_5pages|SFBufCore0A9AllocatorC4free5slots/ { print "incl", $0 }'
  callgrind_annotate --threshold=100 --inclusive=no "$work/out" 2> /dev/null \
    | awk '/SFBufHost0A5BatchV11freeEntries/ { print "self", $0 }'
} | awk -v pages="$pages" '
  {
    n = $2
    gsub(",", "", n)
    total += n
    if ($0 ~ /map_5pages/) map += n; else free += n
  }
  END {
    printf "  map (SFBufBatch.map)           %6.1f instructions per page\n", map / pages
    printf "  free (the batch'"'"'s free(slots:)) %6.1f instructions per page\n", free / pages
    printf "library, a run'"'"'s page: %.1f instructions (%d pages)\n", total / pages, pages
  }'
if [[ ${LIBINSTR_SYMBOLS:-0} != 0 ]]; then
  callgrind_annotate --threshold=100 --inclusive=no "$work/out" 2> /dev/null \
    | awk -v pages="$pages" '
      /SFBufCore|SFBufHost/ && !/PageBench/ {
        gsub(",", "", $1)
        sym = $0
        sub(/^.*\?\?\?:/, "", sym)
        sub(/ \[.*$/, "", sym)
        if ($1 / pages >= 1) printf "  %6.1f self  %s\n", $1 / pages, substr(sym, 1, 100)
      }'
fi
