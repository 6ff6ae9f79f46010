#!/usr/bin/env bash
# tools/bench.sh — measure reel against restic and borg on the same generated data, in one run.
#
# Usage: tools/bench.sh [--out FILE] [--tools "reel restic borg"]
#
# Environment:
#   BENCH_MB=300            size of the generated tree (MiB)
#   BENCH_CHANGE_PCT=1      percent of its bytes changed before the incremental
#   BENCH_SEED=1            generator seed (same seed = same bytes for every tool)
#   BENCH_RUNS=3            repeat the three scenarios this many times, from fresh
#                           repositories and a fresh copy of the same data; the table shows
#                           medians and the report lists every run's seconds
#   BENCH_SMALL_FILES=0     if > 0 (e.g. 1000000): also dump a tree of that many tiny files with
#                           reel and report its peak memory (the "< 500 MB" aim)
#   BENCH_FREEZE_FILES=0    if > 0 (e.g. 100000): also measure how long a `store` clone of an
#                           unchanged volume of that many files keeps it frozen, against the
#                           time to read the volume (warm page cache, and cold when root can
#                           drop the caches)
#   BENCH_DIR=$TMPDIR       where the temporary work directory goes (needs about
#                           (4 + BENCH_RUNS x tools) x BENCH_MB free: restored trees are kept)
#   BENCH_BORG_COMPRESSION=zstd,3
#   REEL_BIN                use this reel binary instead of building one with cargo build --profile dist
#
# Scenarios, each run by every tool; the order of the tools is reversed every other run (reel,
# restic, borg, then borg, restic, reel), so no tool always comes first after the data is set up:
#   full     a first backup of the tree
#   incr     a second backup after tools/gen_tree.py --mutate changed ~BENCH_CHANGE_PCT% of it
#   restore  a restore of the latest backup into an empty directory (verified with diff -r
#            afterwards, outside the timing)
# Measured: wall seconds and peak RSS (GNU time "%e %M"), throughput = tree size / seconds (for
# the incremental too: the rate at which the volume is covered), repository size (du -sb) after
# the phase. MB = 10^6 bytes. Before every measured command the script runs `sync` and waits a
# second, so the kernel's writeback of what an earlier phase wrote is not billed to the next
# tool (on a virtual disk that alone moved a restore's time by seconds).
#
# Fairness notes (also written into the report):
# - The page cache is not dropped (that needs root and would measure the disk, not the tools).
#   Instead the tree is read once before the first tool, so every tool starts warm.
# - restic always encrypts (it has no "none" mode); RESTIC_PASSWORD is set to a fixed value.
#   restic uses its local cache (the normal set-up) in the work directory; the cache is not
#   counted in the repository size, its size is reported separately. Its compression is the
#   repository-v2 default (auto = zstd).
# - borg runs with --encryption none and --compression $BENCH_BORG_COMPRESSION (zstd like the
#   others, instead of borg's default lz4); its files cache lives in the work directory.
# - reel runs as built by `cargo build --profile dist` (release with LTO, the build to install),
#   spool in the work directory.
# - Restored trees are verified and kept until the end, not deleted before the next tool's
#   restore: on ext4 without a journal, creating a file scans past every inode freed in the last
#   minute, so deleting one tool's 6000-file restore made the next tool's restore pay several
#   seconds for it (docs/PERFORMANCE.md, seventh and eighth sessions).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

OUT=""
TOOLS="reel restic borg"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        --tools) TOOLS=${2:?--tools needs a list}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$OUT" ]; then
    case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
fi

BENCH_MB=${BENCH_MB:-300}
BENCH_CHANGE_PCT=${BENCH_CHANGE_PCT:-1}
BENCH_SEED=${BENCH_SEED:-1}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_SMALL_FILES=${BENCH_SMALL_FILES:-0}
BENCH_FREEZE_FILES=${BENCH_FREEZE_FILES:-0}
BENCH_BORG_COMPRESSION=${BENCH_BORG_COMPRESSION:-zstd,3}

say() { printf '[bench] %s\n' "$*" >&2; }
die() { printf 'bench.sh: %s\n' "$*" >&2; exit 1; }

# --- tools --------------------------------------------------------------------------------------

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

apt_updated=0
apt_install() { # package...
    command -v apt-get >/dev/null 2>&1 || return 1
    if [ "$apt_updated" -eq 0 ]; then
        as_root apt-get update -qq >/dev/null 2>&1 || true
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

[ -x /usr/bin/time ] || apt_install time || die "GNU time (/usr/bin/time) is needed: apt-get install time"
command -v python3 >/dev/null 2>&1 || die "python3 is needed for tools/gen_tree.py"

has_tool() { case " $TOOLS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
SKIPPED=""
if has_tool restic && ! command -v restic >/dev/null 2>&1; then
    apt_install restic || { say "restic missing and not installable: skipped"; SKIPPED="$SKIPPED restic"; }
fi
if has_tool borg && ! command -v borg >/dev/null 2>&1; then
    apt_install borgbackup || { say "borg missing and not installable: skipped"; SKIPPED="$SKIPPED borg"; }
fi
for t in $SKIPPED; do TOOLS=$(echo " $TOOLS " | sed "s/ $t / /; s/^ *//; s/ *$//"); done

REEL=""
if has_tool reel || [ "$BENCH_SMALL_FILES" -gt 0 ] || [ "$BENCH_FREEZE_FILES" -gt 0 ]; then
    if [ -n "${REEL_BIN:-}" ]; then
        REEL=$REEL_BIN
    else
        say "building reel (cargo build --profile dist)"
        cargo build --profile dist --bin reel --quiet
        REEL="${CARGO_TARGET_DIR:-$ROOT/target}/dist/reel"
    fi
    [ -x "$REEL" ] || die "$REEL not found after cargo build --profile dist"
fi

# --- work directory -----------------------------------------------------------------------------

WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/reel-bench.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
DATA="$WORK/data"
LOGS="$WORK/logs"
mkdir -p "$LOGS"

export RESTIC_PASSWORD=reel-bench
export RESTIC_REPOSITORY="$WORK/restic"
export BORG_BASE_DIR="$WORK/borg-base"
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset REEL_SPOOL BORG_REPO RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND
SPOOL="$WORK/spool"
BORG="$WORK/borg"
RCACHE="$WORK/restic-cache"

tree_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d\n", s}'; }
dir_bytes() { if [ -e "$1" ]; then du -sb "$1" | cut -f1; else echo 0; fi; }

ROWS=()   # "run|tool|phase|seconds|MB/s|rss MB|repo MB", one per measured command of every run
run=1
# measure TOOL PHASE BYTES REPO_DIR CWD CMD... : run CMD in CWD under GNU time, record a row.
measure() {
    local tool=$1 phase=$2 bytes=$3 repo=$4 cwd=$5
    shift 5
    local tf="$LOGS/$tool-$phase.time"
    say "$tool $phase: $*"
    sync
    sleep 1
    if ! (cd "$cwd" && exec /usr/bin/time -f "%e %M" -o "$tf" "$@") \
        >"$LOGS/$tool-$phase.out" 2>"$LOGS/$tool-$phase.err"; then
        echo "---- $tool $phase failed: $* ----" >&2
        tail -n 30 "$LOGS/$tool-$phase.out" "$LOGS/$tool-$phase.err" >&2
        exit 1
    fi
    local secs rss_kb repo_bytes
    read -r secs rss_kb < <(tail -n 1 "$tf")
    repo_bytes=$(dir_bytes "$repo")
    ROWS+=("$run|$(awk -v t="$tool" -v p="$phase" -v s="$secs" -v b="$bytes" -v r="$rss_kb" -v rb="$repo_bytes" \
        'BEGIN { if (s < 0.01) s = 0.01; printf "%s|%s|%.2f|%.1f|%.0f|%.1f", t, p, s, b / 1e6 / s, r / 1024, rb / 1e6 }')")
    say "  -> ${ROWS[-1]}"
}

# --- data ---------------------------------------------------------------------------------------

# Read the whole tree once, so every tool starts with a warm page cache. (Not tar to /dev/null:
# GNU tar skips reading file contents when its output is /dev/null.)
warm() { find "$1" -type f -exec cat {} + >/dev/null; }

RUN_TOOLS=$TOOLS
PRISTINE="$WORK/pristine"
if [ "$BENCH_MB" = 0 ]; then
    RUN_TOOLS=""  # BENCH_MB=0: only the small-files scenario
    BENCH_RUNS=0
    BYTES0=0 FILES0=0
else
    say "generating $BENCH_MB MiB in $PRISTINE (seed $BENCH_SEED)"
    python3 tools/gen_tree.py "$PRISTINE" --size-mb "$BENCH_MB" --seed "$BENCH_SEED"
    BYTES0=$(tree_bytes "$PRISTINE")
    FILES0=$(find "$PRISTINE" -type f | wc -l)
fi

for run in $(seq "$BENCH_RUNS"); do
say "run $run of $BENCH_RUNS"
ORDER=$RUN_TOOLS
if [ $((run % 2)) = 0 ]; then ORDER=$(echo "$RUN_TOOLS" | tr ' ' '\n' | tac | tr '\n' ' '); fi
rm -rf "$SPOOL" "$RESTIC_REPOSITORY" "$RCACHE" "$BORG" "$BORG_BASE_DIR"
# A fresh copy of the data for every run, kept like the restored trees: deleting 6000 files
# would slow this run's restores (see the fairness notes).
DATA="$WORK/data-$run"
cp -a "$PRISTINE" "$DATA"
warm "$DATA"

# --- full ---------------------------------------------------------------------------------------

for t in $ORDER; do
    case $t in
        reel)
            "$REEL" --spool "$SPOOL" init >"$LOGS/reel-init.out" 2>&1 || { cat "$LOGS/reel-init.out" >&2; exit 1; }
            "$REEL" --spool "$SPOOL" volume add bench "$DATA" >>"$LOGS/reel-init.out" 2>&1 \
                || { cat "$LOGS/reel-init.out" >&2; exit 1; }
            measure reel full "$BYTES0" "$SPOOL" "$WORK" "$REEL" --spool "$SPOOL" dump bench --level 0
            ;;
        restic)
            restic init --cache-dir "$RCACHE" -q >"$LOGS/restic-init.out" 2>&1 || { cat "$LOGS/restic-init.out" >&2; exit 1; }
            measure restic full "$BYTES0" "$RESTIC_REPOSITORY" "$DATA" \
                restic backup --cache-dir "$RCACHE" -q --host bench .
            ;;
        borg)
            borg init --encryption none "$BORG" >"$LOGS/borg-init.out" 2>&1 || { cat "$LOGS/borg-init.out" >&2; exit 1; }
            measure borg full "$BYTES0" "$BORG" "$DATA" \
                borg create --compression "$BENCH_BORG_COMPRESSION" "$BORG::full" .
            ;;
        *) die "unknown tool: $t (known: reel restic borg)" ;;
    esac
done

# --- incremental --------------------------------------------------------------------------------

BYTES1=0
if [ -n "$RUN_TOOLS" ]; then
    say "changing ~$BENCH_CHANGE_PCT% of the tree"
    python3 tools/gen_tree.py "$DATA" --mutate 1 --percent "$BENCH_CHANGE_PCT" --seed "$BENCH_SEED"
    warm "$DATA"
    sleep 1  # reel refuses a dump time not later than the previous one
    BYTES1=$(tree_bytes "$DATA")
fi

for t in $ORDER; do
    case $t in
        reel)
            measure reel incr "$BYTES1" "$SPOOL" "$WORK" "$REEL" --spool "$SPOOL" dump bench --level 1
            ;;
        restic)
            measure restic incr "$BYTES1" "$RESTIC_REPOSITORY" "$DATA" \
                restic backup --cache-dir "$RCACHE" -q --host bench .
            ;;
        borg)
            measure borg incr "$BYTES1" "$BORG" "$DATA" \
                borg create --compression "$BENCH_BORG_COMPRESSION" "$BORG::incr" .
            ;;
    esac
done

# --- restore ------------------------------------------------------------------------------------

# Each restore is checked against the data (outside the timing) and kept: deleting it would
# bill the next restore for ext4's scan past freed inodes (see the fairness notes).
verify_restore() { # tool dir
    if ! diff -r -q "$DATA" "$2" >"$LOGS/$1-verify.out" 2>&1; then
        echo "---- $1: the restore differs from the data ----" >&2
        head -n 20 "$LOGS/$1-verify.out" >&2
        exit 1
    fi
}

for t in $ORDER; do
    dst="$WORK/restore-$t-$run"
    case $t in
        reel)
            # the latest dump: --at now, into an empty directory.
            now=$(date '+%Y-%m-%dT%H:%M:%S%:z')
            mkdir -p "$dst"
            measure reel restore "$BYTES1" "$SPOOL" "$WORK" \
                "$REEL" --spool "$SPOOL" restore bench --at "$now" --to "$dst"
            ;;
        restic)
            mkdir -p "$dst"
            measure restic restore "$BYTES1" "$RESTIC_REPOSITORY" "$WORK" \
                restic restore latest --cache-dir "$RCACHE" -q --target "$dst"
            ;;
        borg)
            mkdir -p "$dst"
            measure borg restore "$BYTES1" "$BORG" "$dst" borg extract "$BORG::incr"
            ;;
    esac
    verify_restore "$t" "$dst"
done
done # runs

# --- a million small files (reel's memory) ------------------------------------------------------

if [ "$BENCH_SMALL_FILES" -gt 0 ]; then
    rm -rf "$DATA"
    SMALL="$WORK/small"
    say "generating $BENCH_SMALL_FILES small files"
    python3 tools/gen_tree.py "$SMALL" --small-files "$BENCH_SMALL_FILES" --seed "$BENCH_SEED"
    SBYTES=$(tree_bytes "$SMALL")
    SSPOOL="$WORK/spool-small"
    "$REEL" --spool "$SSPOOL" init >/dev/null
    "$REEL" --spool "$SSPOOL" volume add small "$SMALL" >/dev/null
    measure reel "full-${BENCH_SMALL_FILES}-files" "$SBYTES" "$SSPOOL" "$WORK" "$REEL" --spool "$SSPOOL" dump small --level 0
    sleep 1
    measure reel "incr-${BENCH_SMALL_FILES}-files" "$SBYTES" "$SSPOOL" "$WORK" "$REEL" --spool "$SSPOOL" dump small --level 1
    rm -rf "$SMALL" "$SSPOOL"
fi

# --- freeze time of a store clone (issue 3) -----------------------------------------------------

FREEZE_LINE=""
if [ "$BENCH_FREEZE_FILES" -gt 0 ]; then
    FVOL="$WORK/freeze-vol"
    FSPOOL="$WORK/spool-freeze"
    say "generating $BENCH_FREEZE_FILES files for the freeze measurement"
    python3 tools/gen_tree.py "$FVOL" --small-files "$BENCH_FREEZE_FILES" --seed "$BENCH_SEED"
    FBYTES=$(tree_bytes "$FVOL")
    "$REEL" --spool "$FSPOOL" init >/dev/null
    "$REEL" --spool "$FSPOOL" volume add vol "$FVOL" >/dev/null
    "$REEL" --spool "$FSPOOL" backup vol --level 0 >"$LOGS/freeze-first.out"
    sleep 1.1  # out of the same-second window of the first scan
    "$REEL" --spool "$FSPOOL" clone vol >"$LOGS/freeze-second.out"
    frozen=$(sed -n 's/.*frozen for \([0-9.]*\) s.*/\1/p' "$LOGS/freeze-second.out" | head -n 1)
    first=$(sed -n 's/.*frozen for \([0-9.]*\) s.*/\1/p' "$LOGS/freeze-first.out" | head -n 1)
    t0=$(date +%s.%N); warm "$FVOL"; t1=$(date +%s.%N)
    warm_read=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    cold_read="n/a (needs root)"
    if [ -w /proc/sys/vm/drop_caches ]; then
        sync; echo 3 >/proc/sys/vm/drop_caches
        t0=$(date +%s.%N); warm "$FVOL"; t1=$(date +%s.%N)
        cold_read="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s"
    fi
    FREEZE_LINE="freeze: a store clone of an unchanged volume of $BENCH_FREEZE_FILES files ($(awk -v b="$FBYTES" 'BEGIN {printf "%.1f", b / 1e6}') MB) kept it frozen ${frozen:-?} s (the first clone, which read everything: ${first:-?} s); reading the volume's files takes $warm_read s warm, $cold_read cold"
    say "$FREEZE_LINE"
    rm -rf "$FVOL" "$FSPOOL"
fi

# --- report -------------------------------------------------------------------------------------

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
fs=$(df -T "$WORK" | awk 'NR == 2 {print $2}')
ver() { "$@" 2>/dev/null | head -n 1 || true; }
report() {
    echo "## Benchmark: reel vs restic vs borg"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); reel commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "- machine: $(nproc) CPUs ($cpu), $mem RAM, kernel $(uname -r), work dir on $fs"
    local versions=()
    [ -z "$REEL" ] || versions+=("$(ver "$REEL" --version || true)")
    ! has_tool restic || versions+=("$(ver restic version)")
    ! has_tool borg || versions+=("$(ver borg --version)")
    local v joined=""
    for v in "${versions[@]}"; do [ -z "$v" ] || joined="${joined:+$joined; }$v"; done
    echo "- versions: ${joined:-?}"
    echo "- data: tools/gen_tree.py --size-mb $BENCH_MB --seed $BENCH_SEED: $FILES0 files, $(awk -v b="$BYTES0" 'BEGIN {printf "%.1f", b / 1e6}') MB;" \
        "incremental after --mutate 1 --percent $BENCH_CHANGE_PCT"
    echo "- restic: encrypted (no unencrypted mode), local cache in use (not counted in repo MB: $(awk -v b="$(dir_bytes "$RCACHE")" 'BEGIN {printf "%.1f", b / 1e6}') MB), compression auto;" \
        "borg: --encryption none --compression $BENCH_BORG_COMPRESSION; page cache warm for all tools, not dropped;" \
        "the tools' order is reversed every other run; restored trees are kept to the end (deleting them slows the next tool's file creation on ext4 without a journal); reel built with \`cargo build --profile dist\`"
    [ -z "$SKIPPED" ] || echo "- skipped (not installable):$SKIPPED"
    echo
    [ -z "$FREEZE_LINE" ] || { echo "- $FREEZE_LINE"; echo; }
    echo "| tool | phase | seconds (median) | MB/s | peak RSS MB (max) | repo MB | seconds, every run |"
    echo "|---|---|---:|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}" | awk -F'|' '
        function median(list,   n, a, i, j, t) {
            n = split(list, a, " ")
            for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        {
            k = $2 "|" $3
            if (!(k in secs)) order[++n] = k
            secs[k] = secs[k] " " $4; repo[k] = repo[k] " " $7
            if ($6 + 0 > rss[k] + 0) rss[k] = $6
            rate[k] = $4 > 0 ? $5 * $4 : 0   # tree bytes / 1e6, the same every run
        }
        END {
            for (i = 1; i <= n; i++) {
                k = order[i]; split(k, tp, "|"); m = median(secs[k])
                printf "| %s | %s | %.2f | %.1f | %s | %.1f | %s |\n", tp[1], tp[2], m, rate[k] / (m > 0 ? m : 0.01), rss[k], median(repo[k]), substr(secs[k], 2)
            }
        }'
    echo
    # Ratios against restic, for the aims of issue 2: of the medians, and within every run.
    if [ -n "$RUN_TOOLS" ] && has_tool reel && has_tool restic; then
        printf '%s\n' "${ROWS[@]}" | awk -F'|' '
            function median(list,   n, a, i, j, t) {
                n = split(list, a, " ")
                for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
                return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
            }
            { s[$1 "," $2 "," $3] = $4; all[$2 "," $3] = all[$2 "," $3] " " $4; repo[$2 "," $3] = repo[$2 "," $3] " " $7; if ($1 > runs) runs = $1 }
            END {
                printf "reel vs restic (medians): full %.1fx faster (aim >= 3x), incremental %.1fx (aim >= 3x), restore %.1fx (aim >= 2x); spool / restic repo = %.2f (aim <= 1)\n",
                    median(all["restic,full"]) / median(all["reel,full"]), median(all["restic,incr"]) / median(all["reel,incr"]),
                    median(all["restic,restore"]) / median(all["reel,restore"]), median(repo["reel,incr"]) / median(repo["restic,incr"])
                for (r = 1; r <= runs; r++)
                    if ((r ",reel,full") in s && (r ",restic,full") in s)
                        printf "run %d: full %.1fx, incremental %.1fx, restore %.1fx\n", r,
                            s[r ",restic,full"] / s[r ",reel,full"], s[r ",restic,incr"] / s[r ",reel,incr"],
                            s[r ",restic,restore"] / s[r ",reel,restore"]
            }'
    fi
}
REPORT=$(report)
echo "$REPORT"
if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    echo "$REPORT" >"$OUT"
    say "report written to $OUT"
fi
