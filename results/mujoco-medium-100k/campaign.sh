#!/usr/bin/env bash
# Runs a queue of this board's jobs one after another, resuming any that a stop or a new machine cut short.
#
#   results/mujoco-medium-100k/campaign.sh QUEUE RUNS_DIR
#
# QUEUE has one "agent dataset" pair a line. Each job trains seeds 0,1,2 for 100k updates (the board's
# protocol) in RUNS_DIR/<agent>_<dataset> and appends its rows to RUNS_DIR/results.csv. A job whose folder
# holds a checkpoint is resumed; a finished one (its folder has a `done` file) is skipped. Two queues can
# run side by side (one per core), each with one torch thread.
set -uo pipefail
queue=$1 runs=$2
mkdir -p "$runs"
while read -r agent env; do
  [[ -z "$agent" || "$agent" == \#* ]] && continue
  name=${agent}_${env} dir=$runs/${agent}_${env}
  [[ -e $dir/done ]] && continue
  echo "$(date -u +%FT%T) start $name"
  if [[ -e $dir/run.yaml ]]; then
    offrl run --resume "$dir" --threads 1 --checkpoint-every 500
  else
    offrl run --agent "$agent" --env "$env" --seeds 0,1,2 --steps 100000 --eval-every 5000 \
      --eval-episodes 10 --threads 1 --checkpoint-every 500 --out "$runs" --name "$name"
  fi
  rc=$?
  echo "$(date -u +%FT%T) end $name rc=$rc"
  [[ $rc -eq 0 ]] && touch "$dir/done" || exit $rc
done < "$queue"
