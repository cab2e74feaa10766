#!/usr/bin/env bash
# Runs a queue of this board's jobs one after another, resuming any that a stop or a new machine cut short.
#
#   results/mujoco-medium-100k/campaign.sh QUEUE RUNS_DIR
#
# QUEUE has one "agent dataset" pair a line. Each job trains seeds 0,1,2 for 100k updates (the board's
# protocol) in RUNS_DIR/<agent>_<dataset> and appends its rows to RUNS_DIR/results.csv. A job whose folder
# holds a checkpoint is resumed; a finished one is skipped: its folder has a `done` file, or its rows are
# on the board (runs.csv beside the queue file) or in RUNS_DIR/results.csv (which inflight.sh carries between
# machines). Two queues can run side by side (one per core), each with one torch thread.
set -uo pipefail
queue=$1 runs=$2
board=$(cd "$(dirname "$queue")" && pwd)  # the queue files live beside the board's runs.csv
mkdir -p "$runs"
finished() {  # rows of agent $1 on dataset $2 in a results table (columns: date,agent,agent_version,dataset,...)
  grep -qs "^[^,]*,$1,[^,]*,$2," "$board/runs.csv" "$runs/results.csv"
}
while read -r agent env; do
  [[ -z "$agent" || "$agent" == \#* ]] && continue
  name=${agent}_${env} dir=$runs/${agent}_${env}
  [[ -e $dir/done ]] && continue
  finished "$agent" "$env" && { echo "$(date -u +%FT%T) skip $name (finished: its rows are published or in $runs/results.csv)"; continue; }
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
