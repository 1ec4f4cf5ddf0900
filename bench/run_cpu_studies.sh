#!/usr/bin/env bash
# Run shipped CPU studies one after another (each runs 2 trials at a time on 2 cores), timing each one and
# saving its verdict, so the README's table of what the studies show can be rebuilt on any machine:
#   bash bench/run_cpu_studies.sh [STUDY ...]      (default: every studies/*.yaml, in dependency order)
# Output: $RESULTS/<study>/ as usual (default results/), plus $RESULTS/_evidence/<study>.{log,verify.json,
# best.json,wall}
set -uo pipefail
cd "$(dirname "$0")/.."
ORDER=(lr_width tune_base lr_depth transfer_target everett_width embed_lr_width mup_ablation steps_transfer
       warmup_width gradclip_width multipliers_width muon_width wd_width wd_timescale_width lr_width_tokens lr_batch)
STUDIES=("${@:-${ORDER[@]}}")
RESULTS=${RESULTS:-results}
OUT=$RESULTS/_evidence
mkdir -p "$OUT"
{ lscpu | grep 'Model name'; python -c "import torch; print('capability', torch.backends.cpu.get_cpu_capability())"; } > "$OUT/cpu.txt"
for study in "${STUDIES[@]}"; do
    axis=width
    case "$study" in lr_depth) axis=depth ;; steps_transfer) axis=tokens ;; lr_batch) axis=batch_size ;; esac
    start=$(date +%s)
    sweeper run "studies/$study.yaml" --results "$RESULTS" --no-wandb > "$OUT/$study.log" 2>&1
    rc=$?
    echo "$(( $(date +%s) - start )) s, exit $rc, finished $(date -u +%FT%TZ)" > "$OUT/$study.wall"
    sweeper best --study "$study" --results "$RESULTS" --json > "$OUT/$study.best.json" 2>> "$OUT/$study.log"
    if [ "$study" != tune_base ]; then
        sweeper verify --study "$study" --results "$RESULTS" --axis "$axis" --json > "$OUT/$study.verify.json" 2>> "$OUT/$study.log"
        sweeper report --study "$study" --results "$RESULTS" --no-wandb --axis "$axis" >> "$OUT/$study.log" 2>&1
    fi
    echo "$study: $(cat "$OUT/$study.wall")"
done
