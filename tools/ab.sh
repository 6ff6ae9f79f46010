#!/usr/bin/env bash
# tools/ab.sh — A/B full dumps of the same tree with several reel binaries or settings,
# alternating round by round, and report medians.
#
# Usage: tools/ab.sh [--rounds N] LABEL=BIN[,KEY=VALUE...] LABEL=BIN[,KEY=VALUE...] ...
#
#   LABEL=BIN             a variant: a reel binary (build one per variant, e.g. copy
#                         target/release/reel to /tmp/reel-a before changing the code)
#   ,KEY=VALUE            reel.toml settings for that variant (compression_level=3,
#                         checkpoint_mb=0, ...) or, in capitals, environment variables
#                         (MALLOC_ARENA_MAX=1, RAYON_NUM_THREADS=3, ...)
#
# Environment: AB_MB=300 (tree size, tools/gen_tree.py seed 1), AB_DIR=$TMPDIR.
#
# Why: this VM's speed drifts by a third within minutes, so one run per variant, or all runs of
# one variant before the other's, measures the drift. Alternating variants every round, with
# `sync` and a second's pause before each dump, puts the drift on both; compare the medians and
# how many rounds each variant won (docs/PERFORMANCE.md reports changes this way).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=5
VARIANTS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=${2:?--rounds needs a number}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *=*) VARIANTS+=("$1"); shift ;;
        *) echo "ab.sh: not a LABEL=BIN variant: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[ ${#VARIANTS[@]} -ge 1 ] || { echo "ab.sh: give at least one LABEL=BIN variant (try --help)" >&2; exit 2; }

WORK=$(mktemp -d "${AB_DIR:-${TMPDIR:-/tmp}}/reel-ab.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
python3 "$ROOT/tools/gen_tree.py" "$WORK/tree" --size-mb "${AB_MB:-300}" --seed 1 2>/dev/null

declare -A WALL CPU
for r in $(seq "$ROUNDS"); do
    for v in "${VARIANTS[@]}"; do
        label=${v%%=*}
        IFS=',' read -r -a parts <<<"${v#*=}"
        bin=${parts[0]}
        [ -x "$bin" ] || { echo "ab.sh: $label: $bin is not an executable" >&2; exit 2; }
        envs=()
        spool="$WORK/spool"
        rm -rf "$spool"
        "$bin" --spool "$spool" init >/dev/null
        "$bin" --spool "$spool" volume add v "$WORK/tree" >/dev/null
        for kv in "${parts[@]:1}"; do
            key=${kv%%=*}
            if [[ $key =~ ^[A-Z_]+$ ]]; then
                envs+=("$kv")
            elif grep -q "^$key = " "$spool/reel.toml"; then
                sed -i "s/^$key = .*/$key = ${kv#*=}/" "$spool/reel.toml"
            else
                echo "ab.sh: $label: reel.toml has no setting $key" >&2
                exit 2
            fi
        done
        sync
        sleep 1
        env ${envs[@]+"${envs[@]}"} /usr/bin/time -o "$WORK/time" -f "%e %U %S" \
            "$bin" --spool "$spool" dump v --level 0 >/dev/null 2>"$WORK/err" ||
            { cat "$WORK/err" >&2; exit 1; }
        read -r w u s <"$WORK/time"
        WALL[$label]+="$w "
        CPU[$label]+="$(awk -v u="$u" -v s="$s" 'BEGIN {printf "%.2f", u + s}') "
        echo "round $r $label: ${w}s wall, $(echo "${CPU[$label]}" | awk '{print $NF}')s CPU" >&2
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.2f", m}'; }
echo "| variant | median wall s | median CPU s | wall s, every round |"
echo "|---|---:|---:|---|"
for v in "${VARIANTS[@]}"; do
    label=${v%%=*}
    echo "| $label | $(median <<<"${WALL[$label]}") | $(median <<<"${CPU[$label]}") | ${WALL[$label]}|"
done
