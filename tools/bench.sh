#!/usr/bin/env bash
# tools/bench.sh — measure reel against restic, rustic, bupstash and borg on the same generated
# data, in one run.
#
# Usage: tools/bench.sh [--out FILE] [--tools "reel restic borg"]
#        (any of: reel reel-before reel-encrypted restic rustic bupstash borg; the default is
#        "reel restic borg"; reel-before is a second reel binary, REEL_BEFORE_BIN, for
#        before/after in one run; reel-encrypted is reel on a spool made with `init --encrypt`)
#
# Environment:
#   BENCH_MB=300            size of the generated tree (MiB) of the full, incr and restore
#                           scenarios (below); 0 skips them, to run only the many-files,
#                           small-files or freeze measurements
#   BENCH_CHANGE_PCT=1      percent of its bytes changed before the incremental
#   BENCH_SEED=1            generator seed (same seed = same bytes for every tool)
#   BENCH_RUNS=3            repeat the three scenarios this many times, from fresh
#                           repositories and a fresh copy of the same data; the table shows
#                           medians and the report lists every run's seconds
#   BENCH_MANY_FILES=0      if > 0 (e.g. 200000): also the many-files scenario, reported in its
#                           own table: tools/gen_tree.py --many-files N --size-mb BENCH_MANY_MB
#                           (50 x 20 folders, 30% of the files copies of others), generated once;
#                           then every tool, one after the other: first backup, unchanged rerun
#                           (a second backup, nothing changed), restore into an empty directory
#                           (verified with diff -r outside the timing), each with a cold page
#                           cache (sync and drop_caches before the command; needs root, else the
#                           tree is read once and the table says "warm")
#   BENCH_MANY_MB=1659      its size in MiB (1659 MiB = 1.74 GB)
#   BENCH_MANY_DUP_PCT=30   its share of files that are copies of others
#   BENCH_SMALL_FILES=0     if > 0 (e.g. 1000000): also dump a tree of that many tiny files with
#                           reel and report its peak memory (the "< 500 MB" aim)
#   BENCH_FREEZE_FILES=0    if > 0 (e.g. 100000): also measure how long a `store` clone of an
#                           unchanged volume of that many files keeps it frozen, against the
#                           time to read the volume (warm page cache, and cold when root can
#                           drop the caches)
#   BENCH_DIR=$TMPDIR       where the temporary work directory goes (needs about
#                           (4 + BENCH_RUNS x tools) x BENCH_MB free: restored trees are kept;
#                           the many-files scenario about (2 + 2 x tools) x BENCH_MANY_MB more)
#   BENCH_BORG_COMPRESSION=zstd,3
#   BENCH_KEEP=0            1: keep the work directory (repositories, restored trees, the tools'
#                           output in logs/) at the end, for a look; its path is printed
#   REEL_BIN                use this reel binary instead of building one with cargo build --profile dist
#   REEL_BEFORE_BIN         the binary of the tool "reel-before" (e.g. an earlier commit's dist
#                           build), measured like reel with a spool of its own
#
# Tools: restic and borg are apt-installed when missing; rustic and bupstash with
# `cargo install --locked rustic-rs` / `bupstash` (bupstash needs libsodium-dev, apt-installed),
# into ~/.cargo/bin, which is added to PATH (a build of both takes a while). A tool that cannot
# be installed is skipped, and the report says so.
#
# Scenarios, each run by every tool; the order of the tools is reversed every other run (reel,
# restic, borg, then borg, restic, reel), so no tool always comes first after the data is set up:
#   full     a first backup of the tree
#   incr     a second backup after tools/gen_tree.py --mutate changed ~BENCH_CHANGE_PCT% of it
#   restore  a restore of the latest backup into an empty directory (verified with diff -r
#            afterwards, outside the timing)
# Measured: wall seconds and peak RSS (GNU time "%e %M"), throughput = tree size / seconds (for
# the incremental too: the rate at which the volume is covered), repository size after the phase
# as the disk holds it (du -s -B1: allocated blocks; redb may leave the catalog's file longer
# than what it wrote, a sparse tail that holds nothing, which du -sb would count).
# MB = 10^6 bytes. Before every measured command the script runs `sync` and waits a second,
# so the kernel's writeback of what an earlier phase wrote is not billed to the next tool (on a
# virtual disk that alone moved a restore's time by seconds).
#
# Fairness notes (also written into the report):
# - The page cache is not dropped in the three scenarios above (that needs root and would
#   measure the disk, not the tools). Instead the tree is read once before the first tool, so
#   every tool starts warm. The many-files scenario drops it before every command instead (when
#   root), so there every tool starts cold, its repository and cache included.
# - restic always encrypts (it has no "none" mode); RESTIC_PASSWORD is set to a fixed value.
#   restic uses its local cache (the normal set-up) in the work directory; the cache is not
#   counted in the repository size, its size is reported separately. Its compression is the
#   repository-v2 default (auto = zstd).
# - rustic (restic's repository format, in Rust) is set up like restic: a fixed password
#   (RUSTIC_PASSWORD), its default settings (repository v2, compression zstd at its default
#   level 3), its cache in the work directory (reported separately, not in repo MB), snapshots
#   with --host bench, so the second backup finds the first as its parent; --no-progress. No
#   rustic.toml profile exists (it says so in its log).
# - bupstash always encrypts: a key made with `bupstash new-key`, the repository with `bupstash
#   init`, BUPSTASH_KEY/BUPSTASH_REPOSITORY set; its default compression (zstd:3) and threads.
#   `bupstash put --xattrs` (its default skips xattrs, which the other tools save), and its send
#   log (the stat cache that lets a second put skip unchanged files) and query cache are in the
#   work directory (reported separately, not in repo MB). Restores use `bupstash restore --into`
#   an empty directory (its fast path, not `bupstash get | tar -x`) with --ownership and
#   --xattrs, so it sets what the other tools set as root.
# - borg runs with --encryption none and --compression $BENCH_BORG_COMPRESSION (zstd like the
#   others, instead of borg's default lz4); its files cache lives in the work directory.
# - reel runs as built by `cargo build --profile dist` (release with LTO, the build to install),
#   spool in the work directory.
# - Every tool runs with its default parallelism, on the same machine.
# - Restored trees are verified and kept until the end, not deleted before the next tool's
#   restore: on ext4 without a journal, creating a file scans past every inode freed in the last
#   minute, so deleting one tool's 6000-file restore made the next tool's restore pay several
#   seconds for it (docs/PERFORMANCE.md, "Measuring on this machine").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

OUT=""
TOOLS="reel restic borg"
KNOWN_TOOLS="reel reel-before reel-encrypted restic rustic bupstash borg"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=${2:?--out needs a file}; shift 2 ;;
        --out=*) OUT=${1#--out=}; shift ;;
        --tools) TOOLS=${2:?--tools needs a list}; shift 2 ;;
        --tools=*) TOOLS=${1#--tools=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$OUT" ]; then
    case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
fi
TOOLS=$(echo $TOOLS)  # one space between names
for t in $TOOLS; do
    case " $KNOWN_TOOLS " in
        *" $t "*) ;;
        *) echo "bench.sh: unknown tool: $t (known: $KNOWN_TOOLS)" >&2; exit 2 ;;
    esac
done

BENCH_MB=${BENCH_MB:-300}
BENCH_CHANGE_PCT=${BENCH_CHANGE_PCT:-1}
BENCH_SEED=${BENCH_SEED:-1}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_MANY_FILES=${BENCH_MANY_FILES:-0}
BENCH_MANY_MB=${BENCH_MANY_MB:-1659}
BENCH_MANY_DUP_PCT=${BENCH_MANY_DUP_PCT:-30}
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

# rustic and bupstash come from crates.io: cargo install puts them in ~/.cargo/bin.
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
case ":$PATH:" in *":$CARGO_BIN:"*) ;; *) PATH="$PATH:$CARGO_BIN" ;; esac
cargo_install() { # crate
    command -v cargo >/dev/null 2>&1 || return 1
    say "installing $1 (cargo install --locked $1; this takes a while)"
    cargo install --locked --quiet "$1"
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
if has_tool rustic && ! command -v rustic >/dev/null 2>&1; then
    cargo_install rustic-rs || { say "rustic missing and not installable: skipped"; SKIPPED="$SKIPPED rustic"; }
fi
if has_tool bupstash && ! command -v bupstash >/dev/null 2>&1; then
    { pkg-config --exists libsodium 2>/dev/null || apt_install libsodium-dev pkg-config; } && cargo_install bupstash \
        || { say "bupstash missing and not installable: skipped"; SKIPPED="$SKIPPED bupstash"; }
fi
for t in $SKIPPED; do TOOLS=$(echo " $TOOLS " | sed "s/ $t / /; s/^ *//; s/ *$//"); done

REEL=""
if has_tool reel || has_tool reel-encrypted || [ "$BENCH_SMALL_FILES" -gt 0 ] || [ "$BENCH_FREEZE_FILES" -gt 0 ]; then
    if [ -n "${REEL_BIN:-}" ]; then
        REEL=$REEL_BIN
    else
        say "building reel (cargo build --profile dist)"
        cargo build --profile dist --bin reel --quiet
        REEL="${CARGO_TARGET_DIR:-$ROOT/target}/dist/reel"
    fi
    [ -x "$REEL" ] || die "$REEL not found after cargo build --profile dist"
fi
REEL_BEFORE=""
if has_tool reel-before; then
    REEL_BEFORE=${REEL_BEFORE_BIN:?the tool reel-before needs REEL_BEFORE_BIN (a reel binary)}
    [ -x "$REEL_BEFORE" ] || die "REEL_BEFORE_BIN=$REEL_BEFORE is not an executable"
fi
# reel_of TOOL / spool_of TOOL: the binary and the spool of reel, reel-before or reel-encrypted.
reel_of() { if [ "$1" = reel-before ]; then echo "$REEL_BEFORE"; else echo "$REEL"; fi; }
spool_of() {
    case $1 in
        reel-before) echo "$SPOOL-before" ;;
        reel-encrypted) echo "$SPOOL-encrypted" ;;
        *) echo "$SPOOL" ;;
    esac
}
# The encrypted spool's passphrase (plain spools never read it); its key is unlocked with
# argon2id's default cost at every command, as a site's would be.
export REEL_PASSWORD=reel-bench

# --- work directory -----------------------------------------------------------------------------

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')  # others' load skews the times
WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/reel-bench.XXXXXX")
cleanup() {
    if [ "${BENCH_KEEP:-0}" = 1 ]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
DATA="$WORK/data"
LOGS="$WORK/logs"
mkdir -p "$LOGS"

export RESTIC_PASSWORD=reel-bench
export RUSTIC_PASSWORD=reel-bench
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset REEL_SPOOL BORG_REPO RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND \
    RUSTIC_PASSWORD_FILE RUSTIC_PASSWORD_COMMAND RUSTIC_USE_PROFILE

# Where one scenario keeps every tool's repository and caches: repos_at PREFIX.
repos_at() {
    SPOOL="$1spool"
    export RESTIC_REPOSITORY="$1restic"
    RCACHE="$1restic-cache"
    export RUSTIC_REPOSITORY="$1rustic"
    RUCACHE="$1rustic-cache"
    export BUPSTASH_REPOSITORY="$1bupstash"
    export BUPSTASH_KEY="$1bupstash.key"
    export BUPSTASH_SEND_LOG="$1bupstash.sendlog"
    export BUPSTASH_QUERY_CACHE="$1bupstash.qcache"
    BORG="$1borg"
    export BORG_BASE_DIR="$1borg-base"
}
repos_at "$WORK/"

# The size of what a tool keeps beside its repository (not counted in repo MB).
tool_cache_bytes() {
    case $1 in
        restic) dir_bytes "$RCACHE" ;;
        rustic) dir_bytes "$RUCACHE" ;;
        bupstash) echo $(( $(dir_bytes "$BUPSTASH_SEND_LOG") + $(dir_bytes "$BUPSTASH_QUERY_CACHE") )) ;;
        *) echo 0 ;;
    esac
}

tree_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d\n", s}'; }
dir_bytes() { if [ -e "$1" ]; then du -s -B1 "$1" | cut -f1; else echo 0; fi; }

ROWS=()   # "run|tool|phase|seconds|MB/s|rss MB|repo MB", one per measured command of every run
MROWS=()  # the same for the many-files scenario (run "many")
DROP_CACHES=0  # 1: drop the page cache before every measured command
run=1
# measure TOOL PHASE BYTES REPO_DIR CWD CMD... : run CMD in CWD under GNU time, record a row.
measure() {
    local tool=$1 phase=$2 bytes=$3 repo=$4 cwd=$5
    shift 5
    local tf="$LOGS/$tool-$phase.time"
    say "$tool $phase: $*"
    sync
    sleep 1
    if [ "$DROP_CACHES" = 1 ]; then
        sync
        echo 3 >/proc/sys/vm/drop_caches
    fi
    if ! (cd "$cwd" && exec /usr/bin/time -f "%e %M" -o "$tf" "$@") \
        >"$LOGS/$tool-$phase.out" 2>"$LOGS/$tool-$phase.err"; then
        echo "---- $tool $phase failed: $* ----" >&2
        tail -n 30 "$LOGS/$tool-$phase.out" "$LOGS/$tool-$phase.err" >&2
        exit 1
    fi
    local secs rss_kb repo_bytes row
    read -r secs rss_kb < <(tail -n 1 "$tf")
    repo_bytes=$(dir_bytes "$repo")
    row="$run|$(awk -v t="$tool" -v p="$phase" -v s="$secs" -v b="$bytes" -v r="$rss_kb" -v rb="$repo_bytes" \
        'BEGIN { if (s < 0.01) s = 0.01; printf "%s|%s|%.2f|%.1f|%.0f|%.1f", t, p, s, b / 1e6 / s, r / 1024, rb / 1e6 }')"
    if [ "$run" = many ]; then MROWS+=("$row"); else ROWS+=("$row"); fi
    say "  -> $row"
}

# --- the tools' commands ------------------------------------------------------------------------

# tool_init TOOL SOURCE: a fresh, empty repository (reel: a spool with SOURCE as volume "bench").
tool_init() {
    local t=$1 src=$2
    case $t in
        reel|reel-before|reel-encrypted)
            rm -rf "$(spool_of "$t")"
            "$(reel_of "$t")" --spool "$(spool_of "$t")" init \
                $([ "$t" = reel-encrypted ] && echo --encrypt) \
                && "$(reel_of "$t")" --spool "$(spool_of "$t")" volume add bench "$src"
            ;;
        restic)
            rm -rf "$RESTIC_REPOSITORY" "$RCACHE"
            restic init --cache-dir "$RCACHE" -q
            ;;
        rustic)
            rm -rf "$RUSTIC_REPOSITORY" "$RUCACHE"
            rustic init --cache-dir "$RUCACHE" --no-progress
            ;;
        bupstash)
            rm -rf "$BUPSTASH_REPOSITORY" "$BUPSTASH_KEY" "$BUPSTASH_SEND_LOG" "$BUPSTASH_QUERY_CACHE"
            bupstash new-key -o "$BUPSTASH_KEY" && bupstash init
            ;;
        borg)
            rm -rf "$BORG" "$BORG_BASE_DIR"
            borg init --encryption none "$BORG"
            ;;
    esac >"$LOGS/$t-init.out" 2>&1 || { echo "---- $t: init failed ----" >&2; cat "$LOGS/$t-init.out" >&2; exit 1; }
}

# tool_backup TOOL PHASE BYTES SOURCE LEVEL: a measured backup of SOURCE (reel: a dump at LEVEL,
# 0 or 1; borg: an archive named PHASE). Each tool backs up "." from inside SOURCE, except reel,
# whose volume is SOURCE.
BUP_ID=""     # bupstash: the id of the latest put
BORG_LAST=""  # borg: the name of the latest archive
tool_backup() {
    local t=$1 phase=$2 bytes=$3 src=$4 level=$5
    case $t in
        reel|reel-before|reel-encrypted)
            measure "$t" "$phase" "$bytes" "$(spool_of "$t")" "$WORK" \
                "$(reel_of "$t")" --spool "$(spool_of "$t")" dump bench --level "$level"
            ;;
        restic)
            measure restic "$phase" "$bytes" "$RESTIC_REPOSITORY" "$src" \
                restic backup --cache-dir "$RCACHE" -q --host bench .
            ;;
        rustic)
            measure rustic "$phase" "$bytes" "$RUSTIC_REPOSITORY" "$src" \
                rustic backup --cache-dir "$RUCACHE" --no-progress --host bench .
            ;;
        bupstash)
            measure bupstash "$phase" "$bytes" "$BUPSTASH_REPOSITORY" "$src" \
                bupstash put --xattrs name=bench .
            BUP_ID=$(tail -n 1 "$LOGS/bupstash-$phase.out")
            [ -n "$BUP_ID" ] || die "bupstash put printed no id (see $LOGS/bupstash-$phase.out)"
            ;;
        borg)
            measure borg "$phase" "$bytes" "$BORG" "$src" \
                borg create --compression "$BENCH_BORG_COMPRESSION" "$BORG::$phase" .
            BORG_LAST=$phase
            ;;
    esac
}

# tool_restore TOOL PHASE BYTES DEST: a measured restore of the latest backup into DEST (new).
tool_restore() {
    local t=$1 phase=$2 bytes=$3 dst=$4 now
    mkdir -p "$dst"
    case $t in
        reel|reel-before|reel-encrypted)
            # the latest dump: --at now (a second after it at least), into an empty directory.
            sleep 1
            now=$(date '+%Y-%m-%dT%H:%M:%S%:z')
            measure "$t" "$phase" "$bytes" "$(spool_of "$t")" "$WORK" \
                "$(reel_of "$t")" --spool "$(spool_of "$t")" restore bench --at "$now" --to "$dst"
            ;;
        restic)
            measure restic "$phase" "$bytes" "$RESTIC_REPOSITORY" "$WORK" \
                restic restore latest --cache-dir "$RCACHE" -q --target "$dst"
            ;;
        rustic)
            measure rustic "$phase" "$bytes" "$RUSTIC_REPOSITORY" "$WORK" \
                rustic restore --cache-dir "$RUCACHE" --no-progress latest "$dst"
            ;;
        bupstash)
            measure bupstash "$phase" "$bytes" "$BUPSTASH_REPOSITORY" "$WORK" \
                bupstash restore --ownership --xattrs --into "$dst" "id=$BUP_ID"
            ;;
        borg)
            measure borg "$phase" "$bytes" "$BORG" "$dst" borg extract "$BORG::$BORG_LAST"
            ;;
    esac
}

# Each restore is checked against its source (outside the timing) and kept: deleting it would
# bill the next restore for ext4's scan past freed inodes (see the fairness notes).
verify_restore() { # tool source restored
    if ! diff -r -q "$2" "$3" >"$LOGS/$1-verify.out" 2>&1; then
        echo "---- $1: the restore differs from the data ----" >&2
        head -n 20 "$LOGS/$1-verify.out" >&2
        exit 1
    fi
}

# --- data ---------------------------------------------------------------------------------------

# Read the whole tree once, so every tool starts with a warm page cache. (Not tar to /dev/null:
# GNU tar skips reading file contents when its output is /dev/null.)
warm() { find "$1" -type f -exec cat {} + >/dev/null; }

RUN_TOOLS=$TOOLS
PRISTINE="$WORK/pristine"
if [ "$BENCH_MB" = 0 ]; then
    RUN_TOOLS=""  # BENCH_MB=0: only the many-files, small-files and freeze scenarios
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
# A fresh copy of the data for every run, kept like the restored trees: deleting 6000 files
# would slow this run's restores (see the fairness notes).
DATA="$WORK/data-$run"
cp -a "$PRISTINE" "$DATA"
warm "$DATA"

# --- full ---------------------------------------------------------------------------------------

for t in $ORDER; do
    tool_init "$t" "$DATA"
    tool_backup "$t" full "$BYTES0" "$DATA" 0
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
    tool_backup "$t" incr "$BYTES1" "$DATA" 1
done

# --- restore ------------------------------------------------------------------------------------

for t in $ORDER; do
    dst="$WORK/restore-$t-$run"
    tool_restore "$t" restore "$BYTES1" "$dst"
    verify_restore "$t" "$DATA" "$dst"
done
done # runs

# The caches' sizes after the last run, for the report.
declare -A CACHE_MB=()
for t in $RUN_TOOLS; do
    CACHE_MB[$t]=$(awk -v b="$(tool_cache_bytes "$t")" 'BEGIN {printf "%.1f", b / 1e6}')
done

# --- many files: first backup, unchanged rerun, restore, cold -----------------------------------

MANY_LINE=""
declare -A MANY_CACHE_MB=()
if [ "$BENCH_MANY_FILES" -gt 0 ] && [ -n "$TOOLS" ]; then
    MANY="$WORK/many"
    say "generating $BENCH_MANY_FILES files, $BENCH_MANY_MB MiB, in $MANY (seed $BENCH_SEED)"
    t0=$(date +%s.%N)
    python3 tools/gen_tree.py "$MANY" --many-files "$BENCH_MANY_FILES" --size-mb "$BENCH_MANY_MB" \
        --dup-percent "$BENCH_MANY_DUP_PCT" --seed "$BENCH_SEED" 2>"$LOGS/many-gen.err" \
        || { cat "$LOGS/many-gen.err" >&2; exit 1; }
    t1=$(date +%s.%N)
    cat "$LOGS/many-gen.err" >&2
    MBYTES=$(tree_bytes "$MANY")
    MFILES=$(find "$MANY" -type f | wc -l)
    MDIRS=$(find "$MANY" -mindepth 1 -type d | wc -l)
    MTOP=$(find "$MANY" -mindepth 1 -maxdepth 1 -type d | wc -l)
    MUNIQUE=$(find "$MANY" -type f -exec md5sum {} + | cut -d' ' -f1 | sort -u | wc -l)
    if [ -w /proc/sys/vm/drop_caches ]; then
        DROP_CACHES=1
        MCACHE="cold (sync; echo 3 > /proc/sys/vm/drop_caches before every command)"
    else
        warm "$MANY"
        MCACHE="warm (not root: the page cache cannot be dropped; the tree was read once before)"
    fi
    MANY_LINE="tools/gen_tree.py --many-files $BENCH_MANY_FILES --size-mb $BENCH_MANY_MB --dup-percent $BENCH_MANY_DUP_PCT --seed $BENCH_SEED: $MFILES files ($((MFILES - MUNIQUE)) of them copies of others) in $MDIRS folders ($MTOP top-level, $((MDIRS - MTOP)) below them), $(awk -v b="$MBYTES" 'BEGIN {printf "%.1f", b / 1e6}') MB, generated in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}') s; page cache $MCACHE"
    say "$MANY_LINE"
    run=many
    repos_at "$WORK/many-"
    for t in $TOOLS; do
        tool_init "$t" "$MANY"
        tool_backup "$t" first "$MBYTES" "$MANY" 0
        tool_backup "$t" rerun "$MBYTES" "$MANY" 1
        dst="$WORK/many-restore-$t"
        tool_restore "$t" restore "$MBYTES" "$dst"
        DROP_CACHES=0
        verify_restore "$t" "$MANY" "$dst"
        [ ! -w /proc/sys/vm/drop_caches ] || DROP_CACHES=1
        MANY_CACHE_MB[$t]=$(awk -v b="$(tool_cache_bytes "$t")" 'BEGIN {printf "%.1f", b / 1e6}')
    done
    DROP_CACHES=0
    repos_at "$WORK/"
    run=1
fi

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

# The median of a space-separated list, in awk (shared by the tables below).
AWK_MEDIAN='
    function median(list,   n, a, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }'

# One line per tool: what it is set up with (the fairness notes, short).
tool_note() {
    case $1 in
        reel) echo "reel: built with \`cargo build --profile dist\` unless REEL_BIN is given" ;;
        reel-encrypted) echo "reel-encrypted: the same reel on a spool made with \`init --encrypt\` (XChaCha20-Poly1305, keyed ids; the key unlocked with argon2id's default cost at every command)" ;;
        reel-before) echo "reel-before: $REEL_BEFORE ($("$REEL_BEFORE" --version 2>/dev/null | head -n 1)), set up like reel" ;;
        restic) echo "restic: encrypted (no unencrypted mode), local cache in use (not counted in repo MB${2:+: $2 MB}), compression auto" ;;
        rustic) echo "rustic: encrypted, default settings (compression zstd, level 3), local cache in use (not counted in repo MB${2:+: $2 MB})" ;;
        bupstash) echo "bupstash: encrypted, default settings (compression zstd:3) but \`put --xattrs\`, send log and query cache in the work dir (not counted in repo MB${2:+: $2 MB}); restore with \`bupstash restore --ownership --xattrs --into\` an empty dir" ;;
        borg) echo "borg: --encryption none --compression $BENCH_BORG_COMPRESSION" ;;
    esac
}

# ratios OTHER AIMS ROWS...: reel against OTHER, of the medians and within every run.
ratios() {
    local other=$1 aims=$2
    shift 2
    printf '%s\n' "$@" | awk -F'|' -v o="$other" -v aims="$aims" "$AWK_MEDIAN"'
        { s[$1 "," $2 "," $3] = $4; all[$2 "," $3] = all[$2 "," $3] " " $4; repo[$2 "," $3] = repo[$2 "," $3] " " $7; if ($1 + 0 > runs) runs = $1 + 0 }
        END {
            if (aims)
                printf "reel vs %s (medians): full %.1fx faster (aim >= 3x), incremental %.1fx (aim >= 3x), restore %.1fx (aim >= 2x); spool / %s repo = %.2f (aim <= 1)\n", o,
                    median(all[o ",full"]) / median(all["reel,full"]), median(all[o ",incr"]) / median(all["reel,incr"]),
                    median(all[o ",restore"]) / median(all["reel,restore"]), o, median(repo["reel,incr"]) / median(repo[o ",incr"])
            else
                printf "reel vs %s (medians): full %.1fx faster, incremental %.1fx, restore %.1fx; spool / %s repo = %.2f\n", o,
                    median(all[o ",full"]) / median(all["reel,full"]), median(all[o ",incr"]) / median(all["reel,incr"]),
                    median(all[o ",restore"]) / median(all["reel,restore"]), o, median(repo["reel,incr"]) / median(repo[o ",incr"])
            for (r = 1; r <= runs; r++)
                if ((r ",reel,full") in s && (r "," o ",full") in s)
                    printf "run %d: full %.1fx, incremental %.1fx, restore %.1fx\n", r,
                        s[r "," o ",full"] / s[r ",reel,full"], s[r "," o ",incr"] / s[r ",reel,incr"],
                        s[r "," o ",restore"] / s[r ",reel,restore"]
        }'
}

report() {
    echo "## Benchmark: $(echo "$TOOLS" | sed 's/ / vs /g')"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); reel commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "- machine: $(nproc) CPUs ($cpu), $mem RAM, kernel $(uname -r), work dir on $fs;" \
        "load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?') at the end"
    local versions=()
    [ -z "$REEL" ] || versions+=("$(ver "$REEL" --version || true)")
    ! has_tool restic || versions+=("$(ver restic version)")
    ! has_tool rustic || versions+=("$(ver rustic --version)")
    ! has_tool bupstash || versions+=("$(ver bupstash version)")
    ! has_tool borg || versions+=("$(ver borg --version)")
    local v t joined=""
    for v in "${versions[@]}"; do [ -z "$v" ] || joined="${joined:+$joined; }$v"; done
    echo "- versions: ${joined:-?}"
    echo "- repo MB: what the disk holds after the phase (du -s -B1, allocated blocks), 10^6 bytes"
    if [ -n "$RUN_TOOLS" ]; then
        echo "- data: tools/gen_tree.py --size-mb $BENCH_MB --seed $BENCH_SEED: $FILES0 files, $(awk -v b="$BYTES0" 'BEGIN {printf "%.1f", b / 1e6}') MB;" \
            "incremental after --mutate 1 --percent $BENCH_CHANGE_PCT"
    fi
    for t in $TOOLS; do echo "- $(tool_note "$t" "${CACHE_MB[$t]:-}")"; done
    if [ -n "$RUN_TOOLS" ]; then
        echo "- page cache warm for all tools, not dropped; the tools' order is reversed every other run;" \
            "restored trees are kept to the end (deleting them slows the next tool's file creation on ext4 without a journal)"
    fi
    [ -z "$SKIPPED" ] || echo "- skipped (not installable):$SKIPPED"
    echo
    [ -z "$FREEZE_LINE" ] || { echo "- $FREEZE_LINE"; echo; }
    if [ "${#ROWS[@]}" -gt 0 ]; then
        echo "| tool | phase | seconds (median) | MB/s | peak RSS MB (max) | repo MB | seconds, every run |"
        echo "|---|---|---:|---:|---:|---:|---|"
        printf '%s\n' "${ROWS[@]}" | awk -F'|' "$AWK_MEDIAN"'
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
    fi
    # Ratios of reel against restic (with the aims of issue 2), rustic and bupstash: of the
    # medians, and within every run.
    if [ -n "$RUN_TOOLS" ] && has_tool reel; then
        if has_tool restic; then ratios restic 1 "${ROWS[@]}"; fi
        for t in rustic bupstash reel-before reel-encrypted; do
            if has_tool "$t"; then ratios "$t" "" "${ROWS[@]}"; fi
        done
    fi
    if [ "${#MROWS[@]}" -gt 0 ]; then
        [ "${#ROWS[@]}" -eq 0 ] || echo
        echo "### Many files: $BENCH_MANY_FILES files, $BENCH_MANY_DUP_PCT% copies, page cache ${MCACHE%% *}"
        echo
        echo "- data: $MANY_LINE"
        local caches=""
        for t in $TOOLS; do
            [ "${MANY_CACHE_MB[$t]:-0.0}" = 0.0 ] || caches="${caches:+$caches, }$t ${MANY_CACHE_MB[$t]} MB"
        done
        [ -z "$caches" ] || echo "- caches beside the repositories after the rerun (not in repo MB): $caches"
        echo "- every tool, one after the other: first backup, unchanged rerun (nothing changed), restore into an empty directory (verified with diff -r, not timed)"
        echo
        echo "| tool | phase | seconds | MB/s | peak RSS MB | repo MB |"
        echo "|---|---|---:|---:|---:|---:|"
        printf '%s\n' "${MROWS[@]}" | awk -F'|' '
            BEGIN { name["first"] = "first backup"; name["rerun"] = "unchanged rerun"; name["restore"] = "restore" }
            { printf "| %s | %s | %.2f | %.1f | %s | %.1f |\n", $2, name[$3], $4, $5, $6, $7 }'
        if has_tool reel; then
            echo
            printf '%s\n' "${MROWS[@]}" | awk -F'|' '
                { s[$2 "," $3] = $4; r[$2 "," $3] = $7; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
                END {
                    for (i = 1; i <= n; i++) {
                        o = order[i]
                        if (o == "reel" || !((o ",first") in s) || !("reel,first" in s)) continue
                        printf "many files, reel vs %s: first backup %.1fx faster, unchanged rerun %.1fx, restore %.1fx; spool / %s repo = %.2f\n", o,
                            s[o ",first"] / s["reel,first"], s[o ",rerun"] / s["reel,rerun"], s[o ",restore"] / s["reel,restore"],
                            o, r["reel,rerun"] / (r[o ",rerun"] > 0 ? r[o ",rerun"] : 1)
                    }
                }'
        fi
    fi
}
REPORT=$(report)
echo "$REPORT"
if [ -n "$OUT" ]; then
    mkdir -p "$(dirname "$OUT")"
    echo "$REPORT" >"$OUT"
    say "report written to $OUT"
fi
