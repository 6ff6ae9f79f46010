#!/usr/bin/env bash
# tools/scale.sh — how reel's dump scales with the volume: level 0 dumps of volumes of several
# sizes into fresh spools (cold cache), each with its throughput, peak RSS and the catalog's
# size at its peak during the dump and at the end; then, on the largest, an incremental after
# 1% of its bytes were rewritten in scattered 8 KiB blocks, a restore, `gc` and
# `check --read-data` (the commands whose memory must stay bounded).
#
# Usage: tools/scale.sh [--out FILE]
#
# Environment:
#   SCALE_SIZES="1 4 16"   volume sizes in GiB, ascending (add 32 where the disk allows: the
#                          volumes stay, one spool at a time, and the largest is restored, so
#                          the disk needs the volumes plus twice the largest)
#   SCALE_DIR=/tmp/reel-scale   where volumes, spools and the restore go (volumes are kept
#                          between runs; the largest has 1% of its bytes rewritten each run)
#   REEL_BIN               the reel to measure (default: `cargo build --profile dist`)
#   SCALE_CHECKPOINT_MB    if set, the spools' checkpoint_mb
#   SCALE_SQUEEZE_MB       if set, each level 0 dump is run a second time (into a fresh spool)
#                          in a memory cgroup of that many MiB (cgroup v1 or v2): its RSS and
#                          the page cache it uses together (the catalog's pages, the volume's,
#                          the packs'), so the index no longer stays cached; reported as its
#                          own row with its throughput against the unconstrained dump's. The
#                          incremental too, on a copy of the spool taken before it (the disk
#                          then needs room for a second copy of the largest spool)
#
# Volumes are files of 128 MiB of random bytes (incompressible, no duplicates): the chunk
# index grows by one row per 12 KiB, the case that stresses it. Run as root (the page cache
# is dropped before every measured command).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        *) echo "usage: tools/scale.sh [--out FILE]" >&2; exit 2 ;;
    esac
done

SIZES=${SCALE_SIZES:-1 4 16}
DIR=${SCALE_DIR:-/tmp/reel-scale}
if [ -z "${REEL_BIN:-}" ]; then
    cargo build --profile dist --bin reel >&2
    REEL_BIN=$PWD/target/dist/reel
fi
mkdir -p "$DIR"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; sleep 1; }

# make_volume GIB: DIR/vGIB with GIB*8 files of 128 MiB.
make_volume() {
    local v=$DIR/v$1 n=$(($1 * 8)) i
    mkdir -p "$v"
    for i in $(seq "$n"); do
        [ -f "$v/f$i" ] && [ "$(stat -c %s "$v/f$i")" = 134217728 ] && continue
        head -c 128M /dev/urandom > "$v/f$i"
    done
}

# A memory cgroup for the squeezed runs; CG_PROCS is the file a process joins it through.
CG_PROCS=""
squeeze_setup() {
    local mb=$1 cg
    if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
        cg=/sys/fs/cgroup/reel-scale
        mkdir -p "$cg"
        echo $((mb << 20)) > "$cg/memory.max"
        echo 0 > "$cg/memory.swap.max" 2>/dev/null || true
    elif [ -d /sys/fs/cgroup/memory ]; then
        cg=/sys/fs/cgroup/memory/reel-scale
        mkdir -p "$cg"
        echo $((mb << 20)) > "$cg/memory.limit_in_bytes"
    else
        echo "[scale] no memory cgroup controller: SCALE_SQUEEZE_MB needs cgroup v1 or v2 with memory" >&2
        exit 1
    fi
    CG_PROCS=$cg/cgroup.procs
}
squeeze_teardown() { [ -n "$CG_PROCS" ] && rmdir "$(dirname "$CG_PROCS")" 2>/dev/null || true; }
trap squeeze_teardown EXIT

# measure SPOOL ARGS...: run reel, sampling the catalog's size; prints "seconds rss_kb peak
# peak_on_disk end compacted disk_read": the catalog's largest size, its size when the command's
# work was done, and after the CLI's compaction (the live size, when it compacted), and the
# bytes the command read from the disk (the volume's, the catalog's and the packs' together;
# the page cache was dropped before it, so this counts what was not served from memory).
measure() {
    local spool=$1; shift
    local stop=$DIR/.stop peakf=$DIR/.peak
    rm -f "$stop"; echo "0 0" > "$peakf"
    (
        # The file's length and the disk space it takes (redb grows a file by doubling its
        # length, and the part not written yet takes none).
        peak=0 peak_alloc=0
        while [ ! -f "$stop" ]; do
            read -r s a < <(stat -c '%s %b' "$spool/catalog.redb" 2>/dev/null || echo "0 0")
            a=$((a * 512))
            if [ "$s" -gt "$peak" ] || [ "$a" -gt "$peak_alloc" ]; then
                [ "$s" -gt "$peak" ] && peak=$s
                [ "$a" -gt "$peak_alloc" ] && peak_alloc=$a
                echo "$peak $peak_alloc" > "$peakf"
            fi
            sleep 0.05
        done
    ) &
    local sampler=$!
    local t0 t1
    t0=$(date +%s.%N)
    local wrap=()
    # shellcheck disable=SC2016 # expanded by the inner shell
    [ -n "${IN_CGROUP:-}" ] && wrap=(sh -c 'echo $$ > "$0" && exec "$@"' "$CG_PROCS")
    "${wrap[@]}" /usr/bin/time -f "%M %I" -o "$DIR/.rss" "$REEL_BIN" --spool "$spool" "$@" > "$DIR/.log" 2>&1 ||
        { cat "$DIR/.log" >&2; touch "$stop"; wait "$sampler"; return 1; }
    t1=$(date +%s.%N)
    touch "$stop"; wait "$sampler"
    # The size the command left before its compaction, if it compacted ("catalog compacted from
    # X to Y"): the dump's own end size.
    local final
    final=$(stat -c %s "$spool/catalog.redb")
    local before
    before=$(sed -n 's/.*catalog *compacted from \([0-9.]*\) \([KMG]\)i\?B.*/\1 \2/p' "$DIR/.log" | head -1)
    if [ -n "$before" ]; then
        read -r n unit <<< "$before"
        case $unit in K) m=1024 ;; M) m=1048576 ;; G) m=1073741824 ;; esac
        before=$(echo "$n * $m / 1" | bc)
    else
        before=$final
    fi
    local rss inputs
    read -r rss inputs < <(tail -1 "$DIR/.rss")
    printf '%.2f %s %s %s %s %s\n' "$(echo "$t1 - $t0" | bc)" "$rss" "$(cat "$peakf")" \
        "$before" "$final" "$((inputs * 512))"
}

mib() { echo "scale=1; $1 / 1048576" | bc; }

rows=()
largest=""
for g in $SIZES; do
    echo "[scale] volume of $g GiB" >&2
    make_volume "$g"
    spool=$DIR/spool$g
    rm -rf "$spool"
    "$REEL_BIN" --spool "$spool" init > /dev/null
    "$REEL_BIN" --spool "$spool" volume add v "$DIR/v$g" > /dev/null
    if [ -n "${SCALE_CHECKPOINT_MB:-}" ]; then
        sed -i "s/^checkpoint_mb = .*/checkpoint_mb = $SCALE_CHECKPOINT_MB/" "$spool/reel.toml"
    fi
    drop_caches
    read -r secs rss peak peak_alloc end final disk < <(measure "$spool" dump v --level 0)
    mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
    rows+=("| $g GiB | level 0 | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$peak_alloc") | $(mib "$end") | $(mib "$final") | $(mib "$disk") |")
    echo "[scale]   ${secs}s, $mbs MiB/s, rss $((rss / 1024)) MB, catalog peak $(mib "$peak") MiB ($(mib "$peak_alloc") MiB on disk), end $(mib "$end") MiB, compacted $(mib "$final") MiB" >&2
    if [ -n "${SCALE_SQUEEZE_MB:-}" ]; then
        [ -n "$CG_PROCS" ] || squeeze_setup "$SCALE_SQUEEZE_MB"
        free=$mbs
        rm -rf "$spool"
        "$REEL_BIN" --spool "$spool" init > /dev/null
        "$REEL_BIN" --spool "$spool" volume add v "$DIR/v$g" > /dev/null
        drop_caches
        read -r secs rss peak peak_alloc end final disk < <(IN_CGROUP=1 measure "$spool" dump v --level 0)
        mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
        pct=$(echo "scale=0; 100 * $mbs / $free" | bc)
        rows+=("| $g GiB | level 0 in a ${SCALE_SQUEEZE_MB} MiB cgroup ($pct%) | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$peak_alloc") | $(mib "$end") | $(mib "$final") | $(mib "$disk") |")
        echo "[scale]   squeezed to ${SCALE_SQUEEZE_MB} MiB: ${secs}s, $mbs MiB/s ($pct% of unconstrained)" >&2
    fi
    # Only the last (largest) spool is used again: the others go, so the disk holds one spool.
    [ -n "$largest" ] && rm -rf "$DIR/spool$largest"
    largest=$g
done

# On the largest: 1% of the bytes rewritten in scattered 8 KiB blocks, an incremental, a restore.
g=$largest
spool=$DIR/spool$g
echo "[scale] rewriting 1% of the $g GiB volume in 8 KiB blocks" >&2
python3 - "$DIR/v$g" <<'EOF'
import os, random, sys
d = sys.argv[1]
files = sorted(os.listdir(d))
total = sum(os.path.getsize(os.path.join(d, f)) for f in files)
rng = random.Random(1)
for _ in range(total // 100 // 8192):
    f = os.path.join(d, rng.choice(files))
    with open(f, "r+b") as fh:
        fh.seek(rng.randrange(0, os.path.getsize(f) - 8192) // 8192 * 8192)
        fh.write(os.urandom(8192))
EOF
if [ -n "${SCALE_SQUEEZE_MB:-}" ]; then
    rm -rf "$spool.before-l1"
    cp -a "$spool" "$spool.before-l1"
fi
drop_caches
read -r secs rss peak peak_alloc end final disk < <(measure "$spool" dump v --level 1)
mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
rows+=("| $g GiB | level 1 after 1% rewritten | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$peak_alloc") | $(mib "$end") | $(mib "$final") | $(mib "$disk") |")
echo "[scale]   level 1: ${secs}s, $mbs MiB/s, rss $((rss / 1024)) MB, read $(mib "$disk") MiB from disk" >&2
if [ -n "${SCALE_SQUEEZE_MB:-}" ]; then
    [ -n "$CG_PROCS" ] || squeeze_setup "$SCALE_SQUEEZE_MB"
    free=$mbs
    drop_caches
    read -r secs rss peak peak_alloc end final disk < <(IN_CGROUP=1 measure "$spool.before-l1" dump v --level 1)
    mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
    pct=$(echo "scale=0; 100 * $mbs / $free" | bc)
    rows+=("| $g GiB | level 1 in a ${SCALE_SQUEEZE_MB} MiB cgroup ($pct%) | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$peak_alloc") | $(mib "$end") | $(mib "$final") | $(mib "$disk") |")
    echo "[scale]   level 1 squeezed to ${SCALE_SQUEEZE_MB} MiB: ${secs}s, $mbs MiB/s ($pct% of unconstrained), read $(mib "$disk") MiB from disk" >&2
    rm -rf "$spool.before-l1"
fi
rm -rf "$DIR/restore"
drop_caches
read -r secs rss peak peak_alloc end final disk < <(measure "$spool" restore v --to "$DIR/restore")
mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
rows+=("| $g GiB | restore | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$peak_alloc") | $(mib "$end") | $(mib "$final") | $(mib "$disk") |")
cmp -s <(cd "$DIR/v$g" && cat $(ls | sort)) <(cd "$DIR/restore" && cat $(ls | sort)) ||
    { echo "[scale] the restore differs from the volume" >&2; exit 1; }
rm -rf "$DIR/restore"
drop_caches
read -r secs rss peak peak_alloc end final disk < <(measure "$spool" gc)
rows+=("| $g GiB | gc | $secs | – | $((rss / 1024)) | $(mib "$peak") | $(mib "$peak_alloc") | $(mib "$end") | $(mib "$final") | $(mib "$disk") |")
drop_caches
read -r secs rss peak peak_alloc end final disk < <(measure "$spool" check --read-data)
mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
rows+=("| $g GiB | check --read-data | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$peak_alloc") | $(mib "$end") | $(mib "$final") | $(mib "$disk") |")

report() {
    echo "## Scale: level 0 dumps of volumes of ${SIZES// /, } GiB"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); reel commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- data: files of 128 MiB of random bytes; page cache dropped before every command"
    echo "- catalog MiB: catalog.redb's length, the largest seen while the command ran (sampled every 50 ms; also the"
    echo "  disk space it took, which leaves out the part of a grown file not written yet), at its"
    echo "  end, and after the CLI's compaction (which runs when a command grew the file by 64 MiB)"
    echo
    echo "| volume | command | seconds | MiB/s | peak RSS MB | catalog MiB, peak | catalog MiB on disk, peak | catalog MiB, end | catalog MiB, compacted | MiB read from disk |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
}
if [ -n "$OUT" ]; then report > "$OUT"; echo "[scale] report written to $OUT" >&2; else report; fi
