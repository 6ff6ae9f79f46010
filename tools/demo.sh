#!/usr/bin/env bash
# tools/demo.sh — a week of reel in a minute: nightly runs on a schedule, a listing, a restore
# checked against the day it came from, and the dedup figures.
#
# What it does, in a temporary directory that is removed at the end:
#   1. builds reel (cargo build --release) and generates a ~50 MB volume (tools/gen_tree.py)
#   2. gives the volume the schedule 0121321 (Sunday first) and runs `reel nightly` for 7 nights
#      (--date 2026-11-01 .. 2026-11-07, a Sunday to a Saturday: levels 0 1 2 1 3 2 1), each
#      night cloning the volume (store method, frozen only while changed files are read) and
#      dumping the clone, and prints each night's report; between nights it changes the volume (content edits, appends, new and deleted files, a renamed directory, a
#      mode-only and an mtime-only change, a symlink, a hard link) and keeping an exact copy of
#      each day's tree (cp -a)
#   3. prints `reel list`
#   4. restores day 4 (--at 2026-11-04) and checks it against that day's copy: contents (diff -r)
#      and metadata (type, mode, owner, size, mtime to the nanosecond, symlink target)
#   5. prints the dedup figures: the spool's size against the logical bytes of all dumps
#   6. runs `reel check --read-data`
#   7. exports the week to a tape image in the BSD dump format (`reel export`), lists it with the
#      stock `restore -t` when installed, purges from the spool the packs that are on tape,
#      restores day 5 reading the tape (`--tapes DIR`), then imports the tape into a new, empty
#      spool (as after the loss of the backup machine) and restores day 6 from that spool;
#      both checked like day 4
#   8. on that spool: prunes to the last 3 dumps (dry run first), runs gc, restores day 7;
#      then deletes catalog.redb, rebuilds it from the packs and restores day 5 again
# and ends with PASS or FAIL (exit status 0 or 1).
#
# Environment: DEMO_MB=50 (volume size, MiB), DEMO_ALL_DAYS=1 (restore and check every day, not
# only day 4), DEMO_KEEP=1 (keep the work directory and print where it is), DEMO_DIR (parent of
# the work directory; default $TMPDIR or /tmp), REEL_BIN (use this reel binary, do not build).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DEMO_MB=${DEMO_MB:-50}
DEMO_ALL_DAYS=${DEMO_ALL_DAYS:-0}
DEMO_KEEP=${DEMO_KEEP:-0}

WORK=$(mktemp -d "${DEMO_DIR:-${TMPDIR:-/tmp}}/reel-demo.XXXXXX")
RESULT=""
finish() {
    local rc=$?
    if [ -z "$RESULT" ]; then
        if [ "$rc" -eq 0 ]; then RESULT=PASS; else RESULT=FAIL; fi
    fi
    if [ "$DEMO_KEEP" = 1 ]; then
        echo "work directory kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    if [ "$RESULT" = PASS ]; then
        echo "PASS: a week of dumps, restored and verified"
    else
        echo "FAIL: ${FAILED_AT:-see the messages above} (exit status $rc)"
        [ "$rc" -ne 0 ] || rc=1
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM
FAILED_AT=""
step() { FAILED_AT=$1; printf '\n== %s\n' "$1"; }

unset REEL_SPOOL
VOL="$WORK/vol/home"
SPOOL="$WORK/spool"
DAYS="$WORK/days"

if [ -n "${REEL_BIN:-}" ]; then
    BIN=$REEL_BIN  # a reel built elsewhere
else
    step "building reel"
    cargo build --release --quiet
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/reel"
fi
[ -x "$BIN" ] || { echo "$BIN not found after cargo build --release"; exit 1; }
reel() { "$BIN" --spool "$SPOOL" "$@"; }

step "generating a ${DEMO_MB} MiB volume"
python3 tools/gen_tree.py "$VOL" --size-mb "$DEMO_MB" --seed 7
mkdir -p "$VOL/links" "$VOL/hard"
ln -s ../data/store.db "$VOL/links/db"

# Changes of a day beyond content (gen_tree --mutate does the content): deterministic by day.
first_file() { find "$1" -type f | LC_ALL=C sort | sed -n 1p; }
daily_changes() {
    local day=$1 f d
    python3 tools/gen_tree.py "$VOL" --mutate "$day" --percent 2 --seed 7
    # mode only
    f=$(first_file "$VOL/d000")
    chmod "$([ $((day % 2)) -eq 0 ] && echo 600 || echo 640)" "$f"
    # mtime only, with nanoseconds
    f=$(first_file "$VOL/var")
    touch -m -d "@$((1700000000 + day * 86400)).$(printf '%09d' $((day * 111111111)))" "$f"
    # a directory renamed
    d=$(find "$VOL" -maxdepth 1 -name 'd001*' | LC_ALL=C sort | sed -n 1p)
    [ -z "$d" ] || mv "$d" "$VOL/d001.day$day"
    # a symlink retargeted, a hard link added or removed
    ln -sfn "../d000/day$day-missing" "$VOL/links/moving"
    if [ $((day % 2)) -eq 0 ]; then
        ln -f "$VOL/images/disk.img" "$VOL/hard/disk.img"
    else
        rm -f "$VOL/hard/disk.img"
    fi
}

step "a week of nightly runs"
reel init
reel volume add home "$VOL" --schedule 0121321
reel schedule show --date 2026-11-01
mkdir -p "$DAYS"
for day in 1 2 3 4 5 6 7; do
    [ "$day" -eq 1 ] || daily_changes "$day"
    cp -a --sparse=always "$VOL" "$DAYS/day$day"  # the tree as it is on this day
    echo "-- night $day: reel nightly --date 2026-11-0$day"
    reel nightly --date "2026-11-0$day"
done
echo "-- the users' yesterday view (the latest clone): reel ls home@backup links"
reel ls home@backup links

step "reel list"
reel list

# The metadata of a tree, one sorted line per entry: path, type, mode, owner, size (not for
# directories, whose size depends on their history), mtime in ns, symlink target.
meta() {
    (
        cd "$1"
        find . ! -type d -printf '%P %y %m %U:%G %s %T@ %l\n'
        find . -type d -printf '%P %y %m %U:%G - %T@\n'
    ) | LC_ALL=C sort
}

verify_day() { # day [restore options...]
    local day=$1 dst="$WORK/restore-day$1"
    shift
    step "restore day $day and compare it with that day's tree"
    mkdir -p "$dst"
    reel restore home --at "2026-11-0$day" --to "$dst" "$@"
    diff -r --no-dereference "$DAYS/day$day" "$dst"
    if ! diff <(meta "$DAYS/day$day") <(meta "$dst") >"$WORK/meta.diff"; then
        echo "metadata differs (< day $day's tree, > the restore):"
        head -n 40 "$WORK/meta.diff"
        exit 1
    fi
    # Hard links come back as links.
    if [ -e "$DAYS/day$day/hard/disk.img" ]; then
        [ "$(stat -c %i "$dst/hard/disk.img")" = "$(stat -c %i "$dst/images/disk.img")" ] \
            || { echo "hard/disk.img is not a hard link of images/disk.img"; exit 1; }
    fi
    echo "day $day: $(meta "$dst" | wc -l) entries identical in content and metadata"
    rm -rf "$dst"
}

if [ "$DEMO_ALL_DAYS" = 1 ]; then
    for day in 1 2 3 4 5 6 7; do verify_day "$day"; done
else
    verify_day 4
fi

step "dedup figures"
reel list --json >"$WORK/list.json"
python3 - "$WORK/list.json" "$(du -sb "$SPOOL" | cut -f1)" <<'EOF'
import json, sys
dumps = json.load(open(sys.argv[1]))
spool = int(sys.argv[2])
logical = sum(d["logical_bytes"] for d in dumps)
stored = sum(d["stored_bytes"] for d in dumps)
def mb(b):
    return b / 1e6
print(f"{len(dumps)} dumps, {mb(logical):.1f} MB of logical data in all")
for d in dumps:
    print(f"  {d['time']}  level {d['level']}  {mb(d['logical_bytes']):8.1f} MB logical"
          f"  {mb(d['stored_bytes']):7.2f} MB added to the spool")
print(f"spool on disk: {mb(spool):.1f} MB (added by the dumps: {mb(stored):.1f} MB)")
print(f"dedup + compression: {logical / max(spool, 1):.1f}x "
      f"(the week takes {100 * spool / max(logical, 1):.1f}% of its logical size)")
EOF

step "reel check --read-data"
reel check --read-data

step "export the week to a tape image (BSD dump format)"
reel export --to "$WORK/week.tape" --label WEEK48
reel tapes
if command -v restore >/dev/null 2>&1; then
    echo "-- the stock restore reads it: TZ=UTC restore -t -f week.tape"
    TZ=UTC restore -t -f "$WORK/week.tape" | head -n 12
else
    echo "(the stock restore is not installed: apt-get install dump to list the tape with it)"
fi

step "purge what is on tape from the spool, then restore day 5 from the tape"
mkdir -p "$WORK/tapes"
mv "$WORK/week.tape" "$WORK/tapes/week.tape"
du -sh "$SPOOL/packs" | sed 's/^/spool packs before purge: /'
reel purge --exported
du -sh "$SPOOL/packs" | sed 's/^/spool packs after purge:  /'
reel restore home --at 2026-11-05 --to "$WORK/unused" --dry-run
verify_day 5 --tapes "$WORK/tapes"
ln -s tapes/week.tape "$WORK/week.tape"

step "the spool is lost: a new spool imports the tape and restores day 6 from it"
SPOOL_LOST="$SPOOL"
SPOOL="$WORK/spool-from-tape"
reel init
reel import "$WORK/week.tape"
reel list
verify_day 6

step "retention: keep the last 3 dumps (and what their chains need), then gc frees the space"
reel prune --keep-last 3 --dry-run
reel prune --keep-last 3
du -sh "$SPOOL/packs" | sed 's/^/spool packs before gc: /'
# --max-unused 0: rewrite every pack with unused bytes (the default, 10%, would leave the
# 30 MB pack alone: the two pruned days take about 6% of it).
reel gc --max-unused 0
du -sh "$SPOOL/packs" | sed 's/^/spool packs after gc:  /'
verify_day 7

step "catalog.redb is lost: rebuild it from the packs; the pruned dumps stay forgotten"
rm "$SPOOL/catalog.redb"
reel rebuild-catalog
reel list
rm -rf "$WORK/restore-day5"
verify_day 5
reel check --read-data
SPOOL=$SPOOL_LOST

RESULT=PASS
