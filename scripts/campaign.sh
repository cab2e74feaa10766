#!/usr/bin/env bash
# Runs a queue of a leaderboard's jobs one after another, resuming any that a stop cut short.
#
#   scripts/campaign.sh BOARD QUEUE RUNS_DIR      (BOARD: results/NAME, whose runs.csv counts as finished)
#
# QUEUE has one "agent dataset" pair a line. Each job trains seeds 0,1,2 for 100k updates (the board's
# protocol) in RUNS_DIR/<agent>_<dataset> and appends its rows to RUNS_DIR/results.csv. A job whose folder
# holds a checkpoint is resumed; a finished one is skipped: its folder has a `done` file, or its rows on the
# dataset's current version are on the board (BOARD/runs.csv) or in RUNS_DIR/results.csv.
#
# Several queues can run side by side; they share the machine's cores. Each working queue holds a file in
# RUNS_DIR/.queues (its pid) and starts or resumes a job with cores / (working queues) torch threads. A queue
# that runs out of jobs hands its core over: it asks the others to re-plan (a `.more` file), then stops their
# current runs with SIGTERM, which checkpoints the step reached; they resume it at once with more threads
# (what a run computes does not depend on its thread count, only its float rounding does).
set -uo pipefail
board=$1 queue=$2 runs=$3
cores=$(nproc)
queues=$runs/.queues me=$runs/.queues/$(basename "$queue" .txt)
mkdir -p "$queues"
echo $$ > "$me"
trap 'rm -f "$me" "$me.more"' EXIT
sleep 2  # queues started together (start.sh) all register before any of them counts the working ones
log() { echo "$(date -u +%FT%T) $*"; }
working() {  # the pids of the queues still working, this one included
  local f
  for f in "$queues"/*; do
    [[ $f == *.more ]] && continue
    kill -0 "$(cat "$f" 2>/dev/null)" 2>/dev/null && cat "$f"
  done
}
threads() {  # cores / working queues, at least one
  local n t; n=$(working | wc -l); t=$(( cores / (n > 0 ? n : 1) )); echo $(( t > 0 ? t : 1 ))
}
finished() {  # rows of agent $1 on dataset $2, as the recipe now builds it, in a results table (columns:
  # date,agent,agent_version,dataset,dataset_source,dataset_version,...): rows on an older version don't count
  local id
  id=$(python -c "from offrl.data import recipes; r, l = recipes.split_name('$2'); print(recipes.minari_id(r, l))")
  grep -qs "^[^,]*,$1,[^,]*,$2,[^,]*,$id," "$board/runs.csv" "$runs/results.csv"
}
while read -r agent env <&3; do
  [[ -z "$agent" || "$agent" == \#* ]] && continue
  name=${agent}_${env} dir=$runs/${agent}_${env}
  [[ -e $dir/done ]] && continue
  finished "$agent" "$env" && { log "skip $name (finished: its rows are published or in $runs/results.csv)"; continue; }
  while true; do
    rm -f "$me.more"
    t=$(threads)
    log "start $name with $t thread(s)"
    if [[ -e $dir/run.yaml ]]; then
      offrl run --resume "$dir" --threads "$t" --checkpoint-every 500
    else
      offrl run --agent "$agent" --env "$env" --seeds 0,1,2 --steps 100000 --eval-every 5000 \
        --eval-episodes 10 --threads "$t" --checkpoint-every 500 --out "$runs" --name "$name"
    fi
    rc=$?
    log "end $name rc=$rc"
    [[ $rc -ne 0 && -e $me.more ]] && continue  # stopped to take a freed core: resume with more threads
    break
  done
  [[ $rc -eq 0 ]] && touch "$dir/done" || exit $rc
done 3< "$queue"
# Out of jobs: hand this queue's core to the queues still working.
rm -f "$me"
for pid in $(working); do
  name=$(basename "$(grep -l "^$pid\$" "$queues"/* | head -1)")
  touch "$queues/$name.more"
  pkill -TERM -P "$pid" -f "offrl run" && log "asked queue $name to resume its run with more threads"
done
log "queue $(basename "$queue") done"
