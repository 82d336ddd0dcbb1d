#!/usr/bin/env bash
# The library's own CPU time per page of a sequential scan through page runs, by sampling:
# `perf record -e cpu-clock` over `sfbuf bench pages --workload seq --peer batched`, the
# samples of the library's symbols (SFBufCore, SFBufHost) added up and divided by the pages
# the window scanned (trials x 8192, plus the warm-up's 2000 per thread).
#
#   scripts/libcost.sh                                # .build/release/sfbuf, 1 thread, 20 trials
#   scripts/libcost.sh path/to/sfbuf 2 20             # another build, 2 threads
#   LIBCOST_SYMBOLS=1 scripts/libcost.sh              # also each symbol's share (>= 0.5 ns)
#
# Prints two figures: "library", the method of the README's older rounds, which also counts
# swift_retain/swift_release (mostly the bench's own: the direct peer and its per-trial
# parsing of /proc/interrupts), SFBufAllocator.stats (the bench reads the counters twice a
# trial) and WireTable.isWired (the direct peer's wiring check: the window checks a run's
# wiring with WireTable.allWired); and "library proper", without them. Compare builds only within one
# round (run them alternated): this VM's speed swings by 2x from one minute to the next.
# Needs perf (Debian: linux-perf) and permission to sample (root, or perf_event_paranoid).
set -euo pipefail

bin=${1:-.build/release/sfbuf}
threads=${2:-1}
trials=${3:-20}
[[ -x $bin ]] || { echo "libcost.sh: no executable at $bin (swift build -c release first)" >&2; exit 2; }
command -v perf > /dev/null || { echo "libcost.sh: perf is not installed" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
perf record -q -e cpu-clock -F 20000 -o "$work/perf.data" \
  "$bin" bench pages --workload seq --peer batched --threads "$threads" --trials "$trials" \
  > "$work/bench.txt" 2> "$work/bench.err" || {
  echo "libcost.sh: the bench failed:" >&2
  cat "$work/bench.err" >&2
  exit 1
}
perf report -i "$work/perf.data" --stdio -g none --sort sym -F period,sym 2> /dev/null \
  > "$work/report.txt"

pages=$((trials * 8192 + 2000 * threads))
# The period column is in nanoseconds of cpu-clock.
awk -v pages="$pages" '
  /SFBufCore|SFBufHost|swift_retain|swift_release/ && !/PageBench/ {
    all += $1
    if ($0 !~ /swift_retain|swift_release|AllocatorC5statsAA0A5StatsVvg|WireTableC7isWired/) {
      proper += $1
    }
  }
  END {
    printf "library %.0f ns per page, library proper %.0f ns per page (%d pages)\n",
      all / pages, proper / pages, pages
  }' "$work/report.txt"
if [[ ${LIBCOST_SYMBOLS:-0} != 0 ]]; then
  awk -v pages="$pages" '
    /SFBufCore|SFBufHost/ && !/PageBench/ && $1 / pages >= 0.5 {
      printf "  %5.1f ns per page  %s\n", $1 / pages, substr($3, 1, 90)
    }' "$work/report.txt" | sort -rn -k1
fi
grep -E '^seq +[0-9]+ +(direct|pread|batched) ' "$work/bench.txt" \
  | awk '{printf "  %s: %s ns per page, %sx pread\n", $3, $4, $NF}'
