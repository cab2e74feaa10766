#!/usr/bin/env bash
# The GPU check for a lent machine (one NVIDIA GPU, torch already installed, no network): install offrl
# beside that torch, run the tests that train on CUDA, time every agent eager and with CUDA graphs, and train
# 5 seeds of TD3+BC for 1M updates on hopper-medium.
#
#   scripts/gpu_check.sh download [PYVER]     here, with network: the wheels that machine lacks into .whl/;
#                                             (PYVER: its Python, default 3.12) and offrl's wheel, built
#                                             from this tree: download again after changing offrl
#   scripts/gpu_check.sh [STAGE...]           there: stages install tests bench run (default: all, in order)
#   scripts/gpu_check.sh --dry-run [STAGE...] here, on the CPU, with tiny budgets: the same commands
#   scripts/gpu_check.sh rehearse             here: a clean venv with torch and the packages that machine
#                                             already has, the wheel set (downloaded for this Python) installed
#                                             into it as there, then the whole --dry-run inside it
#
# Logs go to $OUT (the device machine's return folder) or /tmp/gpu_check. On the device, a call looks like
#   run(command="bash scripts/gpu_check.sh install tests bench", carry=[".whl"], timeout_s=580)
# with .whl ignored by git (echo /.whl/ >> .git/info/exclude). Budget: one call runs at most 10 minutes and a
# session has 15 minutes of device time in all, starts included, so split the work over calls or sessions:
# the 1M-update run alone targets 10 minutes (`... install run`), and compiling CUDA graphs takes a while for
# each agent and S, so the bench can be narrowed: BENCH_AGENTS=td3bc,iql BENCH_SEEDS=1,64 BENCH_MODES=cudagraphs
# (defaults: all, 1,16,64, "cudagraphs eager"; BENCH_STEPS 200). RUN_STEPS shortens the run (default 1000000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
LOG=${OUT:-/tmp/gpu_check}
mkdir -p "$LOG"
# Packages offrl needs that the lent machine's image lacks (its list: numpy, scipy, h5py, pyyaml, tqdm, click,
# matplotlib, tensorboard, pandas, cloudpickle, typer, absl-py, etils, imageio, pytest are there).
WHEELS="gymnasium==1.4.0 farama-notifications==0.0.6 mujoco==3.17.0 glfw==2.11.0 pyopengl==3.1.10 websockets
importlib-resources minari==0.5.4 stable-baselines3==2.9.2"
# What the image has that offrl uses, for the rehearsal's stand-in of it.
IMAGE="numpy scipy h5py pyyaml tqdm click matplotlib tensorboard pandas cloudpickle typer absl-py etils imageio
pytest typing-extensions packaging fsspec zipp"

dry=0
if [[ ${1:-} == --dry-run ]]; then dry=1; shift; fi

download() {  # here: wheels for the device's Python into .whl/, and offrl's own
  local pyver=${1:-3.12}
  rm -rf .whl && mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl $WHEELS
  $PY -m pip wheel -q --no-deps -w .whl .  # offrl itself (pure Python; built in an isolated environment)
  ls .whl
}

install() {  # there: the wheels into /tmp/site, never touching the image's torch
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}

site() { export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; export PATH=/tmp/site/bin:$PATH; }

offrl() { (cd /tmp && $PY -c 'import sys; from offrl.cli import main; sys.argv[0] = "offrl"; main()' "$@"); }

tests() {  # the tests that train through conftest.train_agent, on the device
  local device=cuda select=()
  if ((dry)); then device=cpu; select=(-k "td3bc or iql"); fi
  # From /tmp, so that the installed offrl (with its agents and envs entry points) is the one imported. The
  # second-wave agents' files come last: with -x, a failure there leaves the first wave's results whole.
  (cd /tmp && OFFRL_TEST_DEVICE=$device $PY -m pytest -q -x -p no:cacheprovider --rootdir "$ROOT" \
     "$ROOT"/tests/test_{td3bc,iql,bc,cql,sac,prdc,wsrl,calql,seed_axis,compile,neighbours}.py \
     "$ROOT"/tests/test_{csve,cdsa,mopo,mobile,cocoa,fb}.py "${select[@]}") \
    2>&1 | tee "$LOG/tests.log"
}

bench() {  # every agent, eager and with CUDA graphs, at S = 1, 16, 64 (dry run: two agents, tiny)
  local args=(--agent "${BENCH_AGENTS:-all}" --env hopper-medium --device cuda --seeds "${BENCH_SEEDS:-1,16,64}"
              --steps "${BENCH_STEPS:-200}") modes=(${BENCH_MODES:-cudagraphs eager})
  if ((dry)); then args=(--agent td3bc,iql --env pointmass-medium --device cpu --seeds 1,2 --steps 3); modes=(eager); fi
  for mode in "${modes[@]}"; do
    offrl bench "${args[@]}" --compile "$mode" 2>&1 | tee "$LOG/bench_$mode.log"
  done
}

run() {  # 5 seeds of TD3+BC, 1M updates, evaluated every 5,000 (dry run: 200 updates on pointmass)
  local args=(--agent td3bc --env hopper-medium --seeds 0-4 --steps "${RUN_STEPS:-1000000}" --eval-every 5000
              --device cuda)
  if ((dry)); then args=(--agent td3bc --env pointmass-medium --seeds 0-4 --steps 200 --eval-every 100
                          --eval-episodes 1 --device cpu); fi
  local start=$SECONDS
  local runs; runs=$(mktemp -d /tmp/gpu_check_runs.XXXXXX)  # a new folder each time: an older table may have older columns
  offrl run "${args[@]}" --out "$runs" 2>&1 | tee "$LOG/run.log"
  echo "run: $((SECONDS - start)) s in all (dataset build included)" | tee -a "$LOG/run.log"
}

rehearse() {  # here: the wheel set into a clean venv that stands in for the image, then the dry run in it
  local venv=/tmp/gpu_check_venv
  rm -rf "$venv" /tmp/site
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch==2.13.0
  "$venv/bin/pip" install -q torch==2.13.0 $IMAGE
  local pyver
  pyver=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  PY="$venv/bin/python" download "$pyver"
  PYTHON="$venv/bin/python" bash "$0" --dry-run install tests bench run
}

stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=(install tests bench run)
case ${stages[0]} in
  download) download "${stages[1]:-3.12}"; exit ;;
  rehearse) rehearse; exit ;;
esac
$PY -c "import torch; c = torch.cuda.is_available()
print('torch', torch.__version__, 'CUDA', c and torch.cuda.get_device_name())" \
  | tee "$LOG/device.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee -a "$LOG/device.log" || true
for stage in "${stages[@]}"; do
  echo "== $stage ($(date -u +%T))"
  case $stage in
    install) install ;;
    tests|bench|run) site; $stage ;;
    *) echo "unknown stage $stage: install tests bench run, or download / rehearse"; exit 2 ;;
  esac
done
echo "== done ($(date -u +%T))"
