#!/usr/bin/env bash
# tools/rss.sh CMD [ARGS...] — run a command and report its wall time and peak memory (RSS).
#
# A thin wrapper over GNU time for ad-hoc checks such as reel's memory on a million small files:
#   python3 tools/gen_tree.py /tmp/small --small-files 1000000
#   tools/rss.sh target/release/reel --spool /tmp/spool dump small --level 0
# The command's own output goes through unchanged; the figures go to stderr as
#   rss.sh: 12.34 s, peak RSS 87.6 MB, exit 0
# and the command's exit status is kept.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: tools/rss.sh CMD [ARGS...]" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "rss.sh: GNU time is needed (apt-get install time)" >&2; exit 1; }
tf=$(mktemp)
trap 'rm -f "$tf"' EXIT
rc=0
/usr/bin/time -f "%e %M %x" -o "$tf" "$@" || rc=$?
read -r secs kb code < <(tail -n 1 "$tf")
awk -v s="$secs" -v k="$kb" -v c="$code" \
    'BEGIN { printf "rss.sh: %.2f s, peak RSS %.1f MB, exit %s\n", s, k / 1024, c }' >&2
exit "$rc"
