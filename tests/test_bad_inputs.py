"""The bad-input battery: every command with each kind of bad value gets one clear line and a non-zero exit.

Each case drives the CLI (click's CliRunner, in this process) in one shared workspace: a small generated
dataset, a finished run, a results table and a set of broken files. For every case the test asserts a
non-zero exit status, exactly one line on stderr that names the problem, no traceback, and that every file
and folder in the workspace (data folder, run folders, results tables) is byte-identical afterwards. Lock files are left out of the comparison: a lock holds the pid of the process
that last took it, and taking it is how a command makes sure nothing else writes while it looks.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from offrl.cli import main
from offrl.envs.sepsis import available as sepsis_available

SEPSIS = sepsis_available()  # the `sepsis` extra: its cases join the battery where it is installed

SMALL = "2000"  # transitions of the workspace's dataset: built once, in a few seconds
TINY_RUN = ["--steps", "20", "--eval-every", "20", "--eval-episodes", "1", "--threads", "1"]


def _write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A data folder with pointmass-medium (2,000 transitions), runs/ok (finished: a checkpoint, result.json,
    a results table) and the broken inputs the cases name as {ws}/..."""
    ws = tmp_path_factory.mktemp("bad_inputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OFFRL_DATA_DIR", str(ws / "data"))
        mp.chdir(ws)
        made = CliRunner().invoke(main, ["run", "--agent", "td3bc", "--env", "pointmass-medium", "--dataset-size",
                                         SMALL, *TINY_RUN, "--out", "runs", "--name", "ok"])
        assert made.exit_code == 0, made.output
        if SEPSIS:  # the discrete-action dataset of the space-mismatch cases
            from offrl.data import resolve
            resolve("offrl:sepsis-clinician", size=int(SMALL), log=lambda msg: None)
        from offrl.data import resolve
        resolve("offrl:pointgoals-random", size=int(SMALL), log=lambda msg: None)  # reward-free, four tasks
    ok = ws / "runs" / "ok"
    spec = yaml.safe_load((ok / "run.yaml").read_text())
    table = (ws / "runs" / "results.csv").read_text()
    header, row = table.splitlines()[:2]

    # Run folders that cannot be resumed.
    for name, run_yaml, checkpoint in [
        ("garbage_checkpoint", yaml.safe_dump(spec), b"this is not a checkpoint\n"),
        ("empty_checkpoint", yaml.safe_dump(spec), b""),
        ("yaml_list", "- agent\n- td3bc\n", None),
        ("yaml_broken", "agent: [td3bc\n", None),
        ("yaml_no_train", yaml.safe_dump({k: v for k, v in spec.items() if k != "train"}), None),
        ("yaml_bad_config", yaml.safe_dump(dict(spec, agent_config=dict(spec["agent_config"], tau=0.0))), None),
        ("yaml_bad_seed", yaml.safe_dump(dict(spec, seeds=[-1])), None),
        ("yaml_unknown_agent", yaml.safe_dump(dict(spec, agent="nope")), None),
    ]:
        _write(ws / "broken" / name / "run.yaml", run_yaml)
        if checkpoint is not None:
            _write(ws / "broken" / name / "checkpoint.pt", checkpoint)
    _write(ws / "not_a_folder", "a file where a folder is needed\n")
    (ws / "a_folder").mkdir()

    # Files given where a results table, a config or a plugin is expected.
    _write(ws / "files" / "empty.csv", "")
    _write(ws / "files" / "binary.csv", bytes(range(256)) * 4)
    _write(ws / "files" / "nul.csv", "agent,dataset\n\0\0\0\n")
    _write(ws / "files" / "header_only.csv", header + "\n")
    _write(ws / "files" / "other.csv", "name,value\na,1\n")
    _write(ws / "files" / "torn.csv", header + "\n" + row[: len(row) // 2] + "\n")
    cols = header.split(",")
    bad_score = row.split(",")
    bad_score[cols.index("final_score")] = "abc"
    _write(ws / "files" / "bad_score.csv", header + "\n" + ",".join(bad_score) + "\n")
    _write(ws / "files" / "list.yaml", "- 1\n- 2\n")
    _write(ws / "files" / "scalar.yaml", "3\n")
    _write(ws / "files" / "broken.yaml", "tau: [0.1\n")
    _write(ws / "files" / "binary.yaml", b"\xff\xfe\x00\x01" * 64)
    _write(ws / "files" / "bad_tau.yaml", "tau: 2.0\n")
    _write(ws / "files" / "unknown_key.yaml", "taux: 0.1\n")
    _write(ws / "files" / "raises.py", "raise RuntimeError('plugin broke')\n")
    _write(ws / "files" / "exits.py", "import sys\nsys.exit(3)\n")
    _write(ws / "files" / "exits_zero.py", "import sys\nsys.exit(0)\n")
    _write(ws / "files" / "syntax.py", "def (:\n")
    _write(ws / "files" / "binary.py", b"\x00\x01\x02" * 30)
    _write(ws / "files" / "no_suffix", "raise ImportError('no such thing')\n")
    yield ws


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under root, and every folder (lock files left out: see the module docstring)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
            for p in sorted(root.rglob("*")) if not p.name.endswith(".lock")}


def run(*extra, agent="td3bc", size=SMALL, out="{ws}/runs"):
    """`offrl run` of a tiny job on the workspace's dataset, with `extra` options."""
    return ["run", "--agent", agent, "--env", "pointmass-medium", "--dataset-size", size, "--out", out,
            "--steps", "20", "--eval-every", "20", "--eval-episodes", "1", *extra]


RUN = run()


def run_sepsis(*extra, agent="bc-discrete"):
    """`offrl run` of a tiny job on the workspace's ICU-Sepsis dataset (discrete actions)."""
    return ["run", "--agent", agent, "--env", "sepsis-clinician", "--dataset-size", SMALL, "--out", "{ws}/runs",
            "--steps", "20", "--eval-every", "20", "--eval-episodes", "1", *extra]


# (id, argv, a word the error line must contain). {ws} is the workspace; env "data=PATH" moves OFFRL_DATA_DIR.
CASES = [
    # offrl run: what to train
    ("run-no-agent", ["run", "--env", "pointmass-medium"], "--agent"),
    ("run-unknown-agent", ["run", "--agent", "nope", "--env", "pointmass-medium"], "unknown agent"),
    ("run-unknown-dataset", ["run", "--agent", "td3bc", "--env", "nope-medium"], "unknown dataset"),
    ("run-unknown-source", ["run", "--agent", "td3bc", "--env", "foo:bar"], "unknown dataset source"),
    ("run-missing-d4rl", ["run", "--agent", "td3bc", "--env", "d4rl:hopper-medium-v2"], "hopper-medium-v2"),
    ("run-missing-minari", ["run", "--agent", "td3bc", "--env", "minari:nope/none-v0"], "nope/none-v0"),
    # offrl run: budgets and cadences
    ("run-steps-zero", [*RUN, "--steps", "0"], "--steps"),
    ("run-steps-negative", [*RUN, "--steps", "-5"], "--steps"),
    ("run-steps-text", [*RUN, "--steps", "abc"], "--steps"),
    ("run-eval-every-zero", [*RUN, "--eval-every", "0"], "--eval-every"),
    ("run-eval-episodes-zero", [*RUN, "--eval-episodes", "0"], "--eval-episodes"),
    ("run-log-every-zero", [*RUN, "--log-every", "0"], "--log-every"),
    ("run-checkpoint-every-zero", [*RUN, "--checkpoint-every", "0"], "--checkpoint-every"),
    ("run-eval-action-noise-negative", [*RUN, "--eval-action-noise", "-0.1"], "--eval-action-noise"),
    ("run-eval-action-noise-nan", [*RUN, "--eval-action-noise", "nan"], "--eval-action-noise"),
    ("run-eval-action-noise-text", [*RUN, "--eval-action-noise", "loud"], "--eval-action-noise"),
    ("run-eval-start-shift-negative", [*RUN, "--eval-start-shift", "-1"], "--eval-start-shift"),
    ("run-unknown-option", [*RUN, "--stpes", "5"], "--stpes"),
    # offrl run: the online phase
    ("run-online-steps-zero", [*RUN, "--online-steps", "0"], "--online-steps"),
    ("run-online-steps-negative", [*RUN, "--online-steps", "-5"], "--online-steps"),
    ("run-online-steps-text", [*RUN, "--online-steps", "many"], "--online-steps"),
    ("run-online-steps-offline-agent", [*RUN, "--online-steps", "10"], "no online phase"),
    ("run-online-only-agent-steps", run("--online-steps", "10", agent="sac"), "online only"),
    ("run-online-only-agent-no-online-steps", ["run", "--agent", "sac", "--env", "pointmass-medium",
                                               "--dataset-size", SMALL, "--out", "{ws}/runs"], "--online-steps"),
    ("set-wsrl-online-utd-not-divisor", run("--online-steps", "10", "--set", "online_utd=3", agent="wsrl"),
     "online_utd"),
    ("set-wsrl-offline-ratio-above-one", run("--online-steps", "10", "--set", "offline_ratio=1.5", agent="wsrl"),
     "offline_ratio"),
    ("set-cocoa-unknown-base", run("--set", "base=foo", agent="cocoa"), "base must be one of"),
    ("set-cocoa-horizon-zero", run("--set", "horizon=0", agent="cocoa"), "horizon"),
    ("set-cocoa-base-of-another-variant", run("--set", "base=cql", agent="cocoa-iql"), "base"),
    ("set-wsrl-warmup-negative", run("--online-steps", "10", "--set", "warmup_steps=-1", agent="wsrl"),
     "warmup_steps"),
    ("set-calql-online-envs-zero", run("--online-steps", "10", "--set", "online_envs=0", agent="calql"),
     "online_envs"),
    ("resume-with-online-steps", ["run", "--resume", "{ws}/runs/ok", "--online-steps", "10"], "--online-steps"),
    # offrl run: seeds
    ("run-seeds-text", [*RUN, "--seeds", "abc"], "--seeds"),
    ("run-seeds-duplicate", [*RUN, "--seeds", "0,0"], "distinct"),
    ("run-seeds-negative", [*RUN, "--seeds", "-1"], "--seeds"),
    ("run-seeds-negative-list", [*RUN, "--seeds", "0,-1"], "-1"),
    ("run-seeds-too-large", [*RUN, "--seeds", "4294967296"], "4294967296"),
    ("run-seeds-empty-range", [*RUN, "--seeds", "5-2"], "seeds"),
    # offrl run: agent config values, from --set and from a YAML file
    ("set-unknown-key", [*RUN, "--set", "alpah=1"], "did you mean alpha"),
    ("set-no-equals", [*RUN, "--set", "alpha"], "key=value"),
    ("set-broken-yaml", [*RUN, "--set", "hidden=[1,"], "YAML"),
    ("set-batch-size-zero", [*RUN, "--set", "batch_size=0"], "batch_size"),
    ("set-batch-size-float", [*RUN, "--set", "batch_size=2.5"], "batch_size"),
    ("set-tau-zero", [*RUN, "--set", "tau=0"], "tau"),
    ("set-tau-above-one", [*RUN, "--set", "tau=1.5"], "tau"),
    ("set-discount-above-one", [*RUN, "--set", "discount=1.01"], "discount"),
    ("set-discount-negative", [*RUN, "--set", "discount=-0.1"], "discount"),
    ("set-actor-lr-negative", [*RUN, "--set", "actor_lr=-1e-4"], "actor_lr"),
    ("set-critic-lr-zero", [*RUN, "--set", "critic_lr=0"], "critic_lr"),
    ("set-lr-nan", [*RUN, "--set", "actor_lr=.nan"], "actor_lr"),
    ("set-lr-inf", [*RUN, "--set", "actor_lr=.inf"], "actor_lr"),
    ("set-lr-text", [*RUN, "--set", "actor_lr=fast"], "actor_lr"),
    ("set-policy-freq-zero", [*RUN, "--set", "policy_freq=0"], "policy_freq"),
    ("set-policy-noise-negative", [*RUN, "--set", "policy_noise=-0.2"], "policy_noise"),
    ("set-hidden-empty", [*RUN, "--set", "hidden=[]"], "hidden"),
    ("set-hidden-zero-width", [*RUN, "--set", "hidden=[256,0]"], "hidden"),
    ("set-hidden-not-list", [*RUN, "--set", "hidden=wide"], "hidden"),
    ("set-bool-as-text", [*RUN, "--set", "normalize_obs=maybe"], "normalize_obs"),
    ("set-iql-expectile-one", run("--set", "expectile=1.0", agent="iql"), "expectile"),
    ("set-cql-n-actions-zero", run("--set", "n_actions=0", agent="cql"), "n_actions"),
    ("set-cql-temperature-zero", run("--set", "temperature=0", agent="cql"), "temperature"),
    ("set-prdc-nn-method", run("--set", "nn_method=fast", agent="prdc"), "nn_method"),
    ("set-csve-members-zero", run("--set", "dynamics_members=0", agent="csve"), "dynamics_members"),
    ("set-csve-max-updates-zero", run("--set", "dynamics_max_updates=0", agent="csve"),
     "dynamics_max_updates"),
    ("set-csve-seed-negative", run("--set", "dynamics_seed=-3", agent="csve"), "dynamics_seed"),
    # zero-shot agents and reward-free data
    ("run-fb-single-task-dataset", run(agent="fb"), "no task set"),
    ("run-reward-agent-reward-free-dataset", [*run(agent="td3bc"), "--env", "pointgoals-random"], "reward-free"),
    ("set-fb-task-inference", run("--set", "task_inference=state", agent="fb"), "task_inference"),
    ("set-fb-z-mix-ratio", run("--set", "z_mix_ratio=1.5", agent="fb"), "z_mix_ratio"),
    ("set-fb-z-dim-zero", run("--set", "z_dim=0", agent="fb"), "z_dim"),
    ("set-vcfb-target-penalty-negative", run("--set", "target_penalty=-1", agent="vcfb"), "target_penalty"),
    ("set-mcfb-action-samples-zero", run("--set", "action_samples=0", agent="mcfb"), "action_samples"),
    ("set-mopo-rollout-length-zero", run("--set", "rollout_length=0", agent="mopo"), "rollout_length"),
    ("set-mopo-real-ratio-above-one", run("--set", "real_ratio=1.5", agent="mopo"), "real_ratio"),
    ("set-mopo-penalty-negative", run("--set", "penalty_coef=-1", agent="mopo"), "penalty_coef"),
    ("set-mopo-weight-decays-short", run("--set", "dynamics_hidden=[32,32]", agent="mopo"), "weight decays"),
    ("set-mobile-samples-zero", run("--set", "num_samples=0", agent="mobile"), "num_samples"),
    ("set-mobile-chunk-zero", run("--set", "rollout_chunk=0", agent="mobile"), "rollout_chunk"),
    ("set-cdsa-density-unknown", run("--set", "density=prior", agent="cdsa"), "density"),
    ("set-cdsa-kappa-negative", run("--set", "kappa=-1", agent="cdsa"), "kappa"),
    ("set-cdsa-sigmas-reversed", run("--set", "sigma_min=2", agent="cdsa"), "sigma_min"),
    ("set-cdsa-base-run-missing", run("--set", "base_run={ws}/nope", agent="cdsa"), "nope"),
    ("set-cdsa-base-run-unfinished", run("--set", "base_run={ws}/broken/garbage_checkpoint", agent="cdsa"),
     "not finished"),
    ("set-cdsa-base-run-lacks-seed", run("--seeds", "5", "--set", "base_run={ws}/runs/ok", agent="cdsa"),
     "no seed 5"),
    ("set-cdsa-base-agent-unknown", run("--set", "base_agent=nope", agent="cdsa"), "nope"),
    ("set-cdsa-base-agent-wrapper", run("--set", "base_agent=cdsa", agent="cdsa"), "wrapper"),
    ("config-missing", [*RUN, "--config", "{ws}/files/none.yaml"], "none.yaml"),
    ("config-folder", [*RUN, "--config", "{ws}/a_folder"], "a_folder"),
    ("config-list", [*RUN, "--config", "{ws}/files/list.yaml"], "mapping"),
    ("config-scalar", [*RUN, "--config", "{ws}/files/scalar.yaml"], "mapping"),
    ("config-broken-yaml", [*RUN, "--config", "{ws}/files/broken.yaml"], "broken.yaml"),
    ("config-binary", [*RUN, "--config", "{ws}/files/binary.yaml"], "binary.yaml"),
    ("config-bad-value", [*RUN, "--config", "{ws}/files/bad_tau.yaml"], "tau"),
    ("config-unknown-key", [*RUN, "--config", "{ws}/files/unknown_key.yaml"], "taux"),
    # offrl run: the machine
    ("run-device-unknown", [*RUN, "--device", "tpu"], "tpu"),
    ("run-device-cuda-absent", [*RUN, "--device", "cuda:99"], "cuda:99"),
    ("run-device-garbage", [*RUN, "--device", "cuda:x"], "cuda:x"),
    ("run-threads-zero", [*RUN, "--threads", "0"], "--threads"),
    ("run-threads-negative", [*RUN, "--threads", "-2"], "--threads"),
    ("run-threads-too-many", [*RUN, "--threads", "100000"], "100000"),
    ("run-compile-unknown", [*RUN, "--compile", "fastest"], "--compile"),
    # offrl run: data and folders
    ("run-dataset-size-zero", run(size="0"), "size"),
    ("run-dataset-size-negative", run(size="-100"), "size"),
    ("run-name-separator", [*RUN, "--name", "a/b"], "--name"),
    ("run-name-dotdot", [*RUN, "--name", ".."], "--name"),
    ("run-name-empty", [*RUN, "--name", ""], "--name"),
    ("run-name-exists", [*RUN, "--name", "ok"], "exists"),
    ("run-out-is-file", run(out="{ws}/not_a_folder"), "not_a_folder"),
    ("run-data-dir-is-file", [*RUN, "--name", "x"], "not_a_folder", "data={ws}/not_a_folder"),
    ("run-plugin-missing", [*RUN, "--plugin", "{ws}/files/none.py"], "none.py"),
    ("run-plugin-raises", [*RUN, "--plugin", "{ws}/files/raises.py"], "plugin broke"),
    ("run-plugin-exits", [*RUN, "--plugin", "{ws}/files/exits.py"], "sys.exit"),
    ("run-plugin-exits-zero", [*RUN, "--plugin", "{ws}/files/exits_zero.py"], "sys.exit"),
    ("run-plugin-syntax", [*RUN, "--plugin", "{ws}/files/syntax.py"], "syntax.py"),
    ("run-plugin-binary", [*RUN, "--plugin", "{ws}/files/binary.py"], "binary.py"),
    ("run-plugin-no-suffix", [*RUN, "--plugin", "{ws}/files/no_suffix"], "no such thing"),
    ("run-plugin-folder", [*RUN, "--plugin", "{ws}/a_folder"], "a_folder"),
    # offrl run --resume
    ("resume-missing", ["run", "--resume", "{ws}/runs/none"], "none"),
    ("resume-a-file", ["run", "--resume", "{ws}/not_a_folder"], "not_a_folder"),
    ("resume-finished", ["run", "--resume", "{ws}/runs/ok"], "finished"),
    ("resume-with-agent", ["run", "--resume", "{ws}/runs/ok", "--agent", "bc"], "--agent"),
    ("resume-checkpoint-every-zero", ["run", "--resume", "{ws}/runs/ok", "--checkpoint-every", "0"],
     "--checkpoint-every"),
    ("resume-threads-zero", ["run", "--resume", "{ws}/runs/ok", "--threads", "0"], "--threads"),
    ("resume-garbage-checkpoint", ["run", "--resume", "{ws}/broken/garbage_checkpoint"], "checkpoint"),
    ("resume-empty-checkpoint", ["run", "--resume", "{ws}/broken/empty_checkpoint"], "checkpoint"),
    ("resume-yaml-list", ["run", "--resume", "{ws}/broken/yaml_list"], "run.yaml"),
    ("resume-yaml-broken", ["run", "--resume", "{ws}/broken/yaml_broken"], "run.yaml"),
    ("resume-yaml-no-train", ["run", "--resume", "{ws}/broken/yaml_no_train"], "train"),
    ("resume-yaml-bad-config", ["run", "--resume", "{ws}/broken/yaml_bad_config"], "tau"),
    ("resume-yaml-bad-seed", ["run", "--resume", "{ws}/broken/yaml_bad_seed"], "-1"),
    ("resume-yaml-unknown-agent", ["run", "--resume", "{ws}/broken/yaml_unknown_agent"], "nope"),
    # offrl runs, agents
    ("runs-missing", ["runs", "{ws}/none"], "none"),
    ("runs-a-file", ["runs", "{ws}/not_a_folder"], "not_a_folder"),
    ("agents-plugin-raises", ["agents", "--plugin", "{ws}/files/raises.py"], "plugin broke"),
    ("agents-plugin-exits", ["agents", "--plugin", "{ws}/files/exits.py"], "sys.exit"),
    # offrl table and leaderboards: results tables
    ("table-missing", ["table", "{ws}/files/none.csv"], "none.csv"),
    ("table-folder", ["table", "{ws}/a_folder"], "folder"),
    ("table-empty", ["table", "{ws}/files/empty.csv"], "no rows"),
    ("table-header-only", ["table", "{ws}/files/header_only.csv"], "no rows"),
    ("table-binary", ["table", "{ws}/files/binary.csv"], "binary.csv"),
    ("table-nul", ["table", "{ws}/files/nul.csv"], "nul.csv"),
    ("table-other-csv", ["table", "{ws}/files/other.csv"], "column"),
    ("table-torn-row", ["table", "{ws}/files/torn.csv"], "line 2"),
    ("table-bad-score", ["table", "{ws}/files/bad_score.csv"], "final_score"),
    ("table-format-unknown", ["table", "{ws}/runs/results.csv", "--format", "pdf"], "--format"),
    ("leaderboard-show-missing", ["leaderboard", "--root", "{ws}/a_folder", "show", "none"], "none"),
    ("leaderboard-root-is-file", ["leaderboard", "--root", "{ws}/not_a_folder"], "not_a_folder"),
    ("leaderboard-publish-missing", ["leaderboard", "--root", "{ws}/boards", "publish", "{ws}/files/none.csv", "b"],
     "none.csv"),
    ("leaderboard-publish-binary", ["leaderboard", "--root", "{ws}/boards", "publish", "{ws}/files/binary.csv",
                                    "b"], "binary.csv"),
    ("leaderboard-publish-no-rows", ["leaderboard", "--root", "{ws}/boards", "publish", "{ws}/runs/results.csv", "b",
                                     "--agent", "nope"], "nope"),
    ("leaderboard-publish-name-path", ["leaderboard", "--root", "{ws}/boards", "publish", "{ws}/runs/results.csv",
                                       "../escape"], "escape"),
    # offrl bench
    ("bench-steps-zero", ["bench", "--steps", "0"], "--steps"),
    ("bench-seeds-zero", ["bench", "--seeds", "0"], "--seeds"),
    ("bench-seeds-with-zero", ["bench", "--seeds", "1,0"], "--seeds"),
    ("bench-seeds-text", ["bench", "--seeds", "many"], "--seeds"),
    ("bench-threads-zero", ["bench", "--threads", "0"], "--threads"),
    ("bench-device-unknown", ["bench", "--device", "gpu"], "gpu"),
    ("bench-unknown-agent", ["bench", "--agent", "nope", "--env", "pointmass-medium", "--seeds", "1"], "nope"),
    ("bench-set-bad-value", ["bench", "--set", "tau=0", "--seeds", "1"], "tau"),
    ("bench-from-missing", ["bench", "--from", "{ws}/runs/none"], "none"),
    ("bench-cudagraphs-on-cpu", ["bench", "--device", "cpu", "--compile", "cudagraphs", "--seeds", "1"],
     "cudagraphs"),
    # offrl cache
    ("cache-clear-dataset-empty", ["cache", "clear", "--dataset", ""], "--dataset"),
    ("cache-clear-dataset-blank", ["cache", "clear", "--dataset", "  "], "--dataset"),
    ("cache-clear-stage-empty", ["cache", "clear", "--stage", ""], "--stage"),
    ("cache-list-data-dir-is-file", ["cache", "list"], "not_a_folder", "data={ws}/not_a_folder"),
    # offrl datasets
    ("datasets-build-unknown", ["datasets", "build", "nope-medium"], "unknown dataset"),
    ("datasets-build-size-zero", ["datasets", "build", "pointmass-medium", "--size", "0"], "size"),
    ("datasets-build-workers-zero", ["datasets", "build", "pointmass-medium", "--workers", "0"], "--workers"),
    ("datasets-info-unknown", ["datasets", "info", "nope-medium"], "unknown dataset"),
    ("datasets-info-size-negative", ["datasets", "info", "pointmass-medium", "--size", "-1"], "size"),
    ("datasets-info-size-on-d4rl", ["datasets", "info", "d4rl:hopper-medium-v2", "--size", "10"], "hopper"),
    ("datasets-list-data-dir-is-file", ["datasets", "list"], "not_a_folder", "data={ws}/not_a_folder"),
    ("datasets-train-behaviour-unknown", ["datasets", "train-behaviour", "nope"], "nope"),
    # offrl dynamics report
    ("dynamics-unknown-dataset", ["dynamics", "report", "nope-medium"], "unknown dataset"),
    ("dynamics-agent-without-model", ["dynamics", "report", "pointmass-medium", "--dataset-size", SMALL,
                                      "--agent", "td3bc"], "dynamics"),
    ("dynamics-set-unknown", ["dynamics", "report", "pointmass-medium", "--dataset-size", SMALL, "--set",
                              "memberz=3"], "memberz"),
    ("dynamics-horizons-text", ["dynamics", "report", "pointmass-medium", "--dataset-size", SMALL, "--horizons",
                                "far"], "--horizons"),
    ("dynamics-horizons-zero", ["dynamics", "report", "pointmass-medium", "--dataset-size", SMALL, "--horizons",
                                "0"], "--horizons"),
    ("dynamics-device-unknown", ["dynamics", "report", "pointmass-medium", "--device", "npu"], "npu"),
    ("dynamics-direction-unknown", ["dynamics", "report", "pointmass-medium", "--direction", "sideways"],
     "--direction"),
    # discrete action spaces: agents refuse the other kind of dataset; OGSRL's options
    ("run-discrete-agent-continuous-data", run(agent="bc-discrete"), "continuous actions"),
    ("run-ogsrl-continuous-data", run(agent="ogsrl"), "continuous actions"),
    ("set-ogsrl-guardian-unknown", run("--set", "guardian=psos", agent="ogsrl"), "guardian"),
    ("set-ogsrl-max-kl-zero", run("--set", "max_kl=0", agent="ogsrl"), "max_kl"),
    ("set-ogsrl-ood-quantile-zero", run("--set", "ood_quantile=0", agent="ogsrl"), "ood_quantile"),
    ("set-cql-discrete-tau-zero", run("--set", "tau=0", agent="cql-discrete"), "tau"),
    *([("run-continuous-agent-discrete-data", run_sepsis(agent="td3bc"), "discrete actions"),
       ("run-discrete-action-noise", run_sepsis("--eval-action-noise", "0.1"), "--eval-action-noise"),
       ("set-ogsrl-backtrack-coef-one", run_sepsis("--set", "backtrack_coef=1", agent="ogsrl"), "backtrack_coef")]
      if SEPSIS else []),
]


def test_the_battery_is_large_and_distinct():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({tuple(c[1]) + tuple(c[3:]) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_gets_one_line_and_changes_nothing(case, workspace, monkeypatch):
    name, argv, word, *env = case
    ws = str(workspace)
    monkeypatch.setenv("OFFRL_DATA_DIR", str(workspace / "data"))
    for item in env:
        key, value = item.split("=", 1)
        assert key == "data"
        monkeypatch.setenv("OFFRL_DATA_DIR", value.format(ws=ws))
    monkeypatch.chdir(workspace)
    before = snapshot(workspace)
    result = CliRunner().invoke(main, [a.format(ws=ws) for a in argv])
    after = snapshot(workspace)

    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{type(result.exception).__name__}: {result.exception}"
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    assert word.format(ws=ws).lower() in lines[0].lower(), lines[0]
    assert after == before, {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
