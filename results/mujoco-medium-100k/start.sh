#!/usr/bin/env bash
# Starts this board's campaign on a machine, or continues it on a new one:
#
#   results/mujoco-medium-100k/start.sh [RUNS_DIR]      (default /work/longruns/runs/campaign)
#
# builds the queues' datasets (a minute or two each; skipped when present), puts back the unfinished runs
# committed under inflight/ (inflight.sh restore) and starts queue_a.txt and queue_b.txt side by side in the
# background, logs beside RUNS_DIR. The queues share the cores; when one runs out of jobs, the other resumes
# its run on all of them. Keep RUNS_DIR the same on every machine: a run's run.yaml names its results table
# by absolute path. Before the machine goes away: inflight.sh save RUNS_DIR, then commit
# results/mujoco-medium-100k/inflight.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
runs=${1:-/work/longruns/runs/campaign}
mkdir -p "$runs"
offrl datasets build $(cat "$here"/queue_*.txt | grep -v '^#' | awk '{print $2}' | sort -u)
"$here/inflight.sh" restore "$runs"
# bash reads a script as it runs it: the queues run a copy, so that editing campaign.sh cannot upset them
cp "$here/campaign.sh" "$runs/.campaign.sh"
for q in a b; do
  nohup "$runs/.campaign.sh" "$here/queue_$q.txt" "$runs" >> "$(dirname "$runs")/campaign_$q.log" 2>&1 &
  echo "queue $q: pid $!, log $(dirname "$runs")/campaign_$q.log"
done
