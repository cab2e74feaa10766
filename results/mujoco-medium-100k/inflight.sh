#!/usr/bin/env bash
# Carries this board's unfinished runs from one machine to the next through git.
#
#   results/mujoco-medium-100k/inflight.sh save RUNS_DIR      # before a machine goes away; then commit inflight/
#   results/mujoco-medium-100k/inflight.sh restore RUNS_DIR   # on a new machine, before campaign.sh
#
# A run of this board takes hours to days of CPU and a session's machine lasts a few hours, so the state a
# run needs to resume is committed under inflight/: for each unfinished run its run.yaml, checkpoint.pt and
# TensorBoard log; the rows of finished runs not yet on the board (results.csv); and the cache entries
# (dynamics ensembles, finished or half-fitted) that the queued runs will reuse. The datasets are not
# carried: `offrl datasets build` regenerates them bit for bit, and a run refuses a dataset whose
# fingerprint differs from the one it started on. Nothing here is needed to read the board.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
store=$here/inflight
cmd=$1 runs=$2
cache=$(python -c "from offrl.paths import cache_dir; print(cache_dir())")
case $cmd in
  save)
    rm -rf "$store.new" && mkdir -p "$store.new/jobs" "$store.new/cache"
    [[ -e $runs/results.csv ]] && cp "$runs/results.csv" "$store.new/"
    for dir in "$runs"/*/; do
      dir=${dir%/} name=$(basename "$dir")
      [[ -e $dir/done || ! -e $dir/checkpoint.pt ]] && continue
      mkdir -p "$store.new/jobs/$name"
      cp -r "$dir/run.yaml" "$dir/checkpoint.pt" "$dir/tb" "$store.new/jobs/$name/" 2>/dev/null || true
    done
    if [[ -d $cache/stages ]]; then  # whole entries, finished (meta.json) or resumable (progress.pt)
      (cd "$cache" && find stages -mindepth 3 -maxdepth 3 -type d ! -path '*/.locks*' \
         -exec cp -r --parents {} "$store.new/cache/" \;)
    fi
    rm -rf "$store" && mv "$store.new" "$store"
    du -sh "$store"/* ;;
  restore)
    [[ -d $store ]] || { echo "nothing in flight ($store does not exist)"; exit 0; }
    mkdir -p "$runs" "$cache"
    for dir in "$store"/jobs/*/; do
      name=$(basename "$dir")
      if [[ -e $runs/$name/checkpoint.pt ]]; then echo "kept $runs/$name (already here)"; continue; fi
      mkdir -p "$runs/$name" && cp -r "$dir"/* "$runs/$name/" && echo "restored $runs/$name"
    done
    [[ -e $store/results.csv && ! -e $runs/results.csv ]] && cp "$store/results.csv" "$runs/"
    (cd "$store/cache" && find stages -mindepth 3 -maxdepth 3 -type d) | while read -r entry; do
      [[ -e $cache/$entry ]] && continue
      mkdir -p "$cache/$(dirname "$entry")" && cp -r "$store/cache/$entry" "$cache/$entry" && echo "restored cache $entry"
    done ;;
  *) echo "usage: $0 save|restore RUNS_DIR" >&2; exit 2 ;;
esac
