#!/usr/bin/env bash
# tools/tape_usage.sh — how much tape two weeks of nightly dumps cost: reel (per dump only the
# chunks it owns), reel with a media set, reel's whole-file estimate, and the stock BSD `dump`
# of the same trees.
#
# Two weeks (2026-11-01, a Sunday, to 2026-11-14) of a generated volume with the schedule
# FIIIIII (level 0 on Sundays, level 1 on other days); every night ~USAGE_PCT% of the volume's
# bytes change (tools/gen_tree.py --mutate) and every night's dumps are exported to a tape:
#   reel             `reel nightly`, then `reel export` (one tape per night)
#   reel media set   the same on a second spool, exporting with --media-set site
#   whole-file       what reel's export reports a whole-file dump of the same levels would write
#   stock dump       the tree copied (rsync -a --delete) into an ext2 image each night, then the
#                    stock `dump -0` / `dump -1 -u` of that image (needs root: loop mount)
# Prints one row per night and the totals, as a Markdown table.
#
# Environment: USAGE_MB=100 (volume size), USAGE_PCT=1, USAGE_DIR=$TMPDIR, REEL_BIN.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
USAGE_MB=${USAGE_MB:-100}
USAGE_PCT=${USAGE_PCT:-1}
W=$(mktemp -d "${USAGE_DIR:-${TMPDIR:-/tmp}}/reel-tape-usage.XXXXXX")
cleanup() {
    mountpoint -q "$W/mnt" 2>/dev/null && umount "$W/mnt"
    rm -rf "$W"
}
trap cleanup EXIT
say() { printf '[tape-usage] %s\n' "$*" >&2; }

if [ -n "${REEL_BIN:-}" ]; then BIN=$REEL_BIN; else cargo build --release --quiet; BIN="$ROOT/target/release/reel"; fi
A="$W/spool-plain"; B="$W/spool-set"; VOL="$W/vol"
reelA() { "$BIN" --spool "$A" "$@"; }
reelB() { "$BIN" --spool "$B" "$@"; }

STOCK=0
if [ "$(id -u)" = 0 ] && command -v dump >/dev/null && command -v mke2fs >/dev/null; then
    command -v rsync >/dev/null || { apt-get install -y -qq rsync >/dev/null 2>&1 || true; }
    command -v rsync >/dev/null && STOCK=1
fi
[ "$STOCK" = 1 ] || say "stock dump baseline skipped (needs root, dump, mke2fs and rsync)"

say "generating ${USAGE_MB} MiB"
python3 tools/gen_tree.py "$VOL" --size-mb "$USAGE_MB" --seed 3 >/dev/null
for s in "$A" "$B"; do
    "$BIN" --spool "$s" init >/dev/null
    "$BIN" --spool "$s" volume add home "$VOL" --schedule FIIIIII >/dev/null
done
if [ "$STOCK" = 1 ]; then
    mkdir -p "$W/mnt" "$W/stock"
    mke2fs -q -F -t ext2 -b 4096 "$W/img.ext2" "$((USAGE_MB * 3))M"
    cp -a /etc "$W/fakeetc"; rm -f "$W/fakeetc/mtab"; : >"$W/fakeetc/mtab"; : >"$W/fakeetc/fstab"
    : >"$W/dumpdates"
    # dump must not see the image under a mounted file system: private mount namespace.
    rundump() { unshare --mount --propagation private sh -c \
        'mount --bind "$0/fakeetc" /etc && exec dump "$@"' "$W" "$@"; }
fi

rows=()
for day in $(seq 1 14); do
    [ "$day" -eq 1 ] || python3 tools/gen_tree.py "$VOL" --mutate "$day" --percent "$USAGE_PCT" --seed 3 >/dev/null
    date=$(printf '2026-11-%02d' "$day")
    level=$([ $(((day - 1) % 7)) -eq 0 ] && echo 0 || echo 1)
    reelA nightly --date "$date" >/dev/null
    reelA export --to "$W/a-$day.tape" --label "A$day" >/dev/null
    reelB nightly --date "$date" >/dev/null
    reelB export --to "$W/b-$day.tape" --label "B$day" --media-set site >/dev/null
    logical=$(reelA list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["logical_bytes"])')
    whole=$(reelA tapes --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["whole_file_bytes"])')
    a=$(stat -c %s "$W/a-$day.tape"); b=$(stat -c %s "$W/b-$day.tape")
    stock="-"
    if [ "$STOCK" = 1 ]; then
        mount -o loop "$W/img.ext2" "$W/mnt"
        rsync -a --delete "$VOL/" "$W/mnt/"
        umount "$W/mnt"
        sleep 1  # dump compares ctimes with the previous dump's date, to the second
        rundump "-$level" -u -D "$W/dumpdates" -f "$W/stock/$day.dump" "$W/img.ext2" 2>"$W/stock/$day.log"
        stock=$(stat -c %s "$W/stock/$day.dump")
    fi
    rows+=("$day|$date|$level|$logical|$stock|$whole|$a|$b")
    say "night $day: level $level, reel $a, media set $b, whole-file $whole, stock $stock"
done

mb() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.2f", b / 1e6 }'; }
echo "| night | date | level | logical MB | stock dump MB | whole-file MB (reel's estimate) | reel tape MB | reel tape MB, media set |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
tl=0; ts=0; tw=0; ta=0; tb=0
for r in "${rows[@]}"; do
    IFS='|' read -r day date level logical stock whole a b <<<"$r"
    echo "| $day | $date | $level | $(mb "$logical") | $(mb "$stock") | $(mb "$whole") | $(mb "$a") | $(mb "$b") |"
    tl=$((tl + logical)); tw=$((tw + whole)); ta=$((ta + a)); tb=$((tb + b))
    [ "$stock" = "-" ] || ts=$((ts + stock))
done
[ "$STOCK" = 1 ] || ts="-"
echo "| **total** | | | $(mb $tl) | $(mb $ts) | $(mb $tw) | $(mb $ta) | $(mb $tb) |"
echo
echo "machine: $(nproc) CPUs, $(uname -r); volume ${USAGE_MB} MiB from tools/gen_tree.py --seed 3, ${USAGE_PCT}% changed per night; $(date -u '+%Y-%m-%d %H:%M UTC'); reel $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
