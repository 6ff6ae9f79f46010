#!/usr/bin/env bash
# The long fault-injection run: tests/faults.rs with many more kills and flips and a random
# seed, then a summary of the FAULTS lines the tests print (docs/RELIABILITY.md quotes it).
#
#   tools/faults.sh [--runs N] [--flips N] [--seed S] [--minutes M] [-- TEST_FILTER...]
#
# --runs N     random kills per command (REEL_FAULT_RUNS; default 200)
# --flips N    byte flips per damaged target (REEL_FAULT_FLIPS; default 256)
# --seed S     seed (REEL_FAULT_SEED; default: random, printed first so a failure can be replayed)
# --minutes M  stop starting new rounds after M minutes (default: no limit); each round is one
#              run of the test binary with a fresh seed, so the summary adds up rounds
# --threads N  tests in parallel (default 2)
#
# Exit status: 0 when every round passed, 1 otherwise (the failing round's seed is printed).
set -euo pipefail

runs=200
flips=256
seed=""
minutes=""
threads=2
filter=()
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs="$2"; shift 2 ;;
        --flips) flips="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --minutes) minutes="$2"; shift 2 ;;
        --threads) threads="$2"; shift 2 ;;
        --) shift; filter=("$@"); break ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "faults.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
echo "building the release test binary..."
bin=$(cargo test --release --test faults --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\/deps\/faults-[^"]*\)".*/\1/p' | tail -1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    cargo test --release --test faults --no-run
    echo "faults.sh: cannot find the faults test binary" >&2
    exit 1
fi

log=$(mktemp -t reel-faults.XXXXXX)
start=$(date +%s)
round=0
status=0
echo "machine: $(nproc) cores, $(uname -sr); log: $log"
while :; do
    round=$((round + 1))
    s=${seed:-$(( (RANDOM << 30) ^ (RANDOM << 15) ^ RANDOM ))}
    echo "round $round: REEL_FAULT_SEED=$s REEL_FAULT_RUNS=$runs REEL_FAULT_FLIPS=$flips"
    if ! REEL_FAULT_SEED=$s REEL_FAULT_RUNS=$runs REEL_FAULT_FLIPS=$flips \
        "$bin" --nocapture --test-threads "$threads" "${filter[@]}" >>"$log" 2>&1; then
        status=1
        echo "round $round FAILED (seed $s); see $log"
        grep -E "panicked at|FAILED|failed" "$log" | tail -20 || true
        break
    fi
    [ -n "$seed" ] && break          # a fixed seed: one round
    [ -z "$minutes" ] && break       # no time budget: one round
    elapsed=$(( $(date +%s) - start ))
    [ "$elapsed" -ge $((minutes * 60)) ] && break
done
elapsed=$(( $(date +%s) - start ))

echo
echo "== summary: $round round(s) in ${elapsed}s on $(nproc) cores =="
# FAULTS <test> seed=S key=value ...: sum each key per test over the rounds.
grep -h '^FAULTS ' "$log" | awk '
{
    t = $2
    if (!(t in seen)) { seen[t] = 1; order[++n] = t }
    for (i = 4; i <= NF; i++) {
        split($i, kv, "=")
        k = t SUBSEP kv[1]
        if (!(k in sum)) { keys[t] = keys[t] " " kv[1] }
        sum[k] += kv[2]
    }
}
END {
    for (j = 1; j <= n; j++) {
        t = order[j]
        line = sprintf("%-16s", t)
        m = split(keys[t], ks, " ")
        for (i = 1; i <= m; i++) line = line sprintf(" %s=%d", ks[i], sum[t SUBSEP ks[i]])
        print line
    }
}'
kills=$(grep -h '^FAULTS kill-' "$log" | grep -o ' kills=[0-9]*' | cut -d= -f2 | paste -sd+ | bc 2>/dev/null || echo 0)
fps=$(grep -h '^FAULTS kill-' "$log" | grep -o ' failpoints_hit=[0-9]*' | cut -d= -f2 | paste -sd+ | bc 2>/dev/null || echo 0)
echo "kills survived: ${kills:-0} random + ${fps:-0} at failpoints"
exit $status
