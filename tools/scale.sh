#!/usr/bin/env bash
# tools/scale.sh — how reel's dump scales with the volume: level 0 dumps of volumes of several
# sizes into fresh spools (cold cache), each with its throughput, peak RSS and the catalog's
# size at its peak during the dump and at the end; then, on the largest, an incremental after
# 1% of its bytes were rewritten in scattered 8 KiB blocks, and a restore.
#
# Usage: tools/scale.sh [--out FILE]
#
# Environment:
#   SCALE_SIZES="1 4 16"   volume sizes in GiB (add 32 where the disk allows: each size needs
#                          about twice its size free, for the volume and the spool)
#   SCALE_DIR=/tmp/reel-scale   where volumes, spools and the restore go (volumes are kept
#                          between runs; the largest has 1% of its bytes rewritten each run)
#   REEL_BIN               the reel to measure (default: `cargo build --profile dist`)
#   SCALE_CHECKPOINT_MB    if set, the spools' checkpoint_mb
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

# measure SPOOL ARGS...: run reel, sampling the catalog's size; prints "seconds rss_kb peak final".
measure() {
    local spool=$1; shift
    local stop=$DIR/.stop peakf=$DIR/.peak
    rm -f "$stop"; echo 0 > "$peakf"
    (
        peak=0
        while [ ! -f "$stop" ]; do
            s=$(stat -c %s "$spool/catalog.redb" 2>/dev/null || echo 0)
            [ "$s" -gt "$peak" ] && peak=$s && echo "$peak" > "$peakf"
            sleep 0.05
        done
    ) &
    local sampler=$!
    local t0 t1
    t0=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$DIR/.rss" "$REEL_BIN" --spool "$spool" "$@" > "$DIR/.log" 2>&1 ||
        { cat "$DIR/.log" >&2; touch "$stop"; wait "$sampler"; return 1; }
    t1=$(date +%s.%N)
    touch "$stop"; wait "$sampler"
    printf '%.2f %s %s %s\n' "$(echo "$t1 - $t0" | bc)" "$(tail -1 "$DIR/.rss")" "$(cat "$peakf")" \
        "$(stat -c %s "$spool/catalog.redb")"
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
    read -r secs rss peak final < <(measure "$spool" dump v --level 0)
    mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
    rows+=("| $g GiB | level 0 | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$final") |")
    echo "[scale]   ${secs}s, $mbs MiB/s, rss $((rss / 1024)) MB, catalog peak $(mib "$peak") MiB, final $(mib "$final") MiB" >&2
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
drop_caches
read -r secs rss peak final < <(measure "$spool" dump v --level 1)
mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
rows+=("| $g GiB | level 1 after 1% rewritten | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$final") |")
rm -rf "$DIR/restore"
drop_caches
read -r secs rss peak final < <(measure "$spool" restore v --to "$DIR/restore")
mbs=$(echo "scale=0; $g * 1024 / $secs" | bc)
rows+=("| $g GiB | restore | $secs | $mbs | $((rss / 1024)) | $(mib "$peak") | $(mib "$final") |")
cmp -s <(cd "$DIR/v$g" && cat $(ls | sort)) <(cd "$DIR/restore" && cat $(ls | sort)) ||
    { echo "[scale] the restore differs from the volume" >&2; exit 1; }
rm -rf "$DIR/restore"

report() {
    echo "## Scale: level 0 dumps of volumes of ${SIZES// /, } GiB"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); reel commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "- data: files of 128 MiB of random bytes; page cache dropped before every command"
    echo "- catalog MiB: catalog.redb's size, the largest seen while the command ran and at its end"
    echo
    echo "| volume | command | seconds | MiB/s | peak RSS MB | catalog MiB, peak | catalog MiB, end |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${rows[@]}"
}
if [ -n "$OUT" ]; then report > "$OUT"; echo "[scale] report written to $OUT" >&2; else report; fi
