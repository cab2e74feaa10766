"""Leaderboards: result rows published under results/ together with the protocol and provenance they share.

A leaderboard is a folder results/NAME/ holding:

    runs.csv     the per-seed result rows, in the results-table format (so `offrl table results/NAME/runs.csv`
                 recomputes everything below from them)
    summary.csv  per (agent, dataset): mean, std, IQM and the IQM's bootstrap CI of the final and best scores
    README.md    the same table in markdown, the shared protocol, where the numbers came from, and the
                 commands that reproduce each row
    configs/     AGENT__DATASET.yaml: each group's full agent configuration, read from its run folder's
                 run.yaml when that is still there (else kept from the board itself), so that the reproduce
                 command does not depend on defaults that may have changed since (`offrl run --config` takes it)
    iqm.png      the IQM and its CI per agent and dataset (offrl/plots.py), shown in the README
    curves.png   learning curves of the groups whose run folders (eval.csv) are on the publishing machine; the
                 README names the groups without one (a board keeps final and best scores, not curves)

Other files in a board's folder (scripts, notes) are the authors': publishing again keeps them. Groups that finish
later are added with `publish(..., add=True)` (`offrl leaderboard publish --add`): the board keeps its rows,
configs, title and notes, and refuses seeds it already holds. A group trained again (on a new version of its
dataset, say) replaces the board's rows of the same agent and dataset with `replace=True` (`--replace`); the
board's other groups, title and notes stay.

A board compares like with like, so `publish` refuses a selection whose rows differ in updates, evaluation
interval or evaluation episodes, whose (agent, dataset) group mixes agent configurations, or that holds the same
(agent, dataset, seed, task) twice (a multi-task run has one row per task of each seed). The folder is
assembled beside its final place and renamed into it, so a reader sees the old board or the new one, never a
half-written one.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import yaml

from offrl import results
from offrl.atomic import current_umask, write_text_atomic
from offrl.config import dict_hash
from offrl.errors import OfflineRLError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PROTOCOL_FIELDS = ("steps", "eval_every", "eval_episodes")  # must agree across a whole board
IQM_PLOT, CURVES_PLOT = "iqm.png", "curves.png"
# What publish writes (a republish without the run folders drops an old curves.png); anything else is kept.
BOARD_FILES = ("runs.csv", "summary.csv", "README.md", "configs", IQM_PLOT, CURVES_PLOT)
SCORES_INTRO = "Normalised scores (100 = "  # opens the README's first paragraph after the title and notes


def results_root() -> Path:
    """$OFFRL_RESULTS_DIR, else the repository's results/ (beside the offrl package), else ./results."""
    if os.environ.get("OFFRL_RESULTS_DIR"):
        return Path(os.environ["OFFRL_RESULTS_DIR"]).expanduser()
    beside_package = Path(__file__).resolve().parent.parent / "results"
    return beside_package if beside_package.is_dir() else Path("results")


def select(rows: list[dict], agents=None, datasets=None) -> list[dict]:
    """The rows of the given agents and datasets (None: all), or an error naming what matched nothing."""
    return results.select_rows(rows, agents, datasets, purpose="to publish")


def check_comparable(rows: list[dict]) -> None:
    """OfflineRLError unless the rows form one comparison (see the module docstring)."""
    for field in PROTOCOL_FIELDS:
        values = defaultdict(list)
        for r in rows:
            values[r[field]].append(f"{r['agent']}/{r['dataset']}")
        if len(values) > 1:
            seen = "; ".join(f"{v:,} in {', '.join(sorted(set(g)))}" for v, g in sorted(values.items()))
            raise OfflineRLError(f"rows differ in {field} ({seen}): a leaderboard compares one protocol; "
                                 f"select rows with --agent/--env")
    configs, seeds = defaultdict(set), defaultdict(int)
    for r in rows:
        configs[(r["agent"], r["dataset"])].add(r["config_hash"])
        seeds[(r["agent"], r["dataset"], r["seed"], r.get("task", ""))] += 1
    for (agent, dataset), hashes in sorted(configs.items()):
        if len(hashes) > 1:
            raise OfflineRLError(f"{agent} on {dataset} mixes agent configurations "
                                 f"(config_hash {', '.join(sorted(hashes))}): publish one of them")
    for (agent, dataset, seed, task), count in sorted(seeds.items()):
        if count > 1:
            raise OfflineRLError(f"{agent} on {dataset} has seed {seed}{f' (task {task})' if task else ''} "
                                 f"{count} times: remove the repeats")


def recorded_config(rows: list[dict]) -> dict | None:
    """The agent configuration a group's rows were trained with, from a run.yaml beside them whose hash
    matches the rows' config_hash; None when no such file is left."""
    for run_dir in sorted({r["run_dir"] for r in rows}):
        try:
            spec = yaml.safe_load((Path(run_dir) / "run.yaml").read_text())
            config = spec["agent_config"]
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            continue
        if dict_hash(config) == rows[0]["config_hash"]:
            return config
    return None


def _config_file(agent: str, dataset: str) -> str:
    return f"{agent}__{re.sub(r'[^A-Za-z0-9._-]', '_', dataset)}.yaml"


def _groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["agent"], r["dataset"])].append(r)
    return dict(sorted(groups.items()))


def _distinct(rows, field) -> str:
    return ", ".join(sorted({str(r[field]) for r in rows}))


def draw_plots(folder: Path, rows: list[dict]) -> list[tuple[str, str, str]]:
    """Draws the board's plots into `folder`: iqm.png always, curves.png from the run folders still on disk.
    Returns the README's lines about them: (file or "", alt text, caption)."""
    from offrl import plots

    plots.save(plots.iqm_figure(rows), folder / IQM_PLOT)
    drawn = [(IQM_PLOT, "IQM of the final normalised score with 95% CIs, per agent and dataset",
              "The interquartile mean (tick) of the final normalised score and its 95% stratified-bootstrap CI "
              "(bar): one panel per dataset, and one pooled over each agent's datasets (the table's "
              "\"all datasets\" rows).")]
    curves, missing = plots.curves_of_rows(rows)
    if curves:
        plots.save(plots.curves_figure(curves), folder / CURVES_PLOT)
        drawn.append((CURVES_PLOT, "Learning curves: normalised score against updates, mean over seeds",
                      "Learning curves from the runs' evaluations: the mean over seeds with its 95% bootstrap band."))
    if missing:
        which = "any group" if not curves else ", ".join(f"{a} on {d}" for a, d in missing)
        drawn.append(("", "", f"No learning curve for {which}: the run folders (their eval.csv) were not on the "
                              f"machine that published this board, which keeps each seed's final and best scores "
                              f"only."))
    return drawn


def readme(name: str, rows: list[dict], title: str | None = None, notes: str | None = None,
           configs: dict | None = None, plots: list[tuple[str, str, str]] | None = None) -> str:
    """The board's README.md: table, plots, protocol, provenance and reproduction commands. `configs` maps
    (agent, dataset) to the file name under configs/ of the groups whose configuration was recovered; `plots`
    is what draw_plots returned."""
    configs = configs or {}
    first = rows[0]
    aggregated = results.aggregate(rows)
    groups = _groups(rows)
    seeds = {key: ",".join(str(s) for s in sorted({r["seed"] for r in g})) for key, g in groups.items()}
    lines = [f"# {title or name}", ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += [f"{SCORES_INTRO}the dataset's reference maximum, 0 = its reference minimum) after "
              f"{first['steps']:,} updates, evaluated every {first['eval_every']:,} updates on "
              f"{first['eval_episodes']} episodes. final = the last evaluation, best = the best one; IQM = "
              f"interquartile mean, with its bootstrap CI over seeds.", "",
              results.format_table(aggregated, fmt="markdown").rstrip(), ""]
    if plots:
        lines += ["## Plots", ""]
        for file, alt, caption in plots:
            lines += ([f"![{alt}]({file})", ""] if file else []) + [caption, ""]
        lines += [f"`offrl plot results/{name}/runs.csv --kind iqm|profile|poi -o FILE.png` draws these and other "
                  f"aggregate plots of the board.", ""]
    lines += ["## Provenance", "",
              "| agent | dataset | seeds | source, version | reference min / max | config | code | "
              "device | updates/s | wall-clock (h) |",
              "|---|---|---|---|---|---|---|---|---:|---:|"]
    for (agent, dataset), g in groups.items():
        ref = f"{g[0]['ref_min_score']:.6g} / {g[0]['ref_max_score']:.6g}"
        speed = sum(r["updates_per_s"] for r in g) / len(g)
        hours = sum(r["wall_clock_s"] for r in g) / len(g) / 3600
        lines.append(f"| {agent} | {dataset} | {seeds[(agent, dataset)]} | {_distinct(g, 'dataset_source')} "
                     f"{_distinct(g, 'dataset_version')} | {ref} | {_distinct(g, 'config_hash')} | "
                     f"{_distinct(g, 'agent_version')} | {_distinct(g, 'device')} | {speed:.1f} | {hours:.2f} |")
    lines += ["", f"Hardware: {_distinct(rows, 'hardware')}. torch {_distinct(rows, 'torch_version')}. "
              f"Runs finished between {min(r['date'] for r in rows)} and {max(r['date'] for r in rows)}. "
              f"updates/s is per process (all seeds of a run train together); wall-clock includes evaluation."
              + (" code A..B: the run started at revision A and was resumed under B."
                 if any(".." in r["agent_version"] for r in rows) else ""),
              "", "## Reproduce", "", "At the code revision in the provenance table:", "", "```bash"]
    for agent, dataset in groups:
        config = (f" --config results/{name}/configs/{configs[(agent, dataset)]}"
                  if (agent, dataset) in configs else "")
        lines.append(f"offrl run --agent {agent} --env {dataset} --seeds {seeds[(agent, dataset)]} "
                     f"--steps {first['steps']} "
                     f"--eval-every {first['eval_every']} --eval-episodes {first['eval_episodes']}{config}")
    lines.append("```")
    missing = sorted(f"{a} on {d}" for a, d in groups if (a, d) not in configs)
    if missing:
        lines += ["", f"No run.yaml was left for {', '.join(missing)} when this board was published: those "
                  f"commands use the defaults of the code revision shown (config hash in the table)."]
    lines += ["", f"`offrl table results/{name}/runs.csv` recomputes the table from the per-seed rows.", ""]
    return "\n".join(lines)


def _write_rows(path: Path, rows: list[dict]) -> None:
    results.append_rows(path, rows)
    lock = Path(str(path) + ".lock")
    if lock.exists():
        lock.unlink()


def _heading(readme_text: str) -> tuple[str | None, str | None]:
    """(title, notes) of a README that `readme` wrote: the first line's heading and the paragraphs before
    the score table's explanation."""
    lines = readme_text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return None, None
    body = []
    for line in lines[1:]:
        if line.startswith(SCORES_INTRO):
            break
        body.append(line)
    return lines[0][2:], "\n".join(body).strip() or None


def _published_config(board: Path, agent: str, dataset: str, config_hash: str) -> dict | None:
    """The configuration a published board already holds for a group, if it has the rows' hash."""
    try:
        config = yaml.safe_load((board / "configs" / _config_file(agent, dataset)).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) and dict_hash(config) == config_hash else None


def _link_or_copy(src, dst) -> None:
    """A hard link (instant, no space: a kept file may be a large checkpoint), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish(rows: list[dict], name: str, root: str | os.PathLike | None = None, title: str | None = None,
            notes: str | None = None, force: bool = False, add: bool = False, replace: bool = False) -> Path:
    """Writes results/NAME/{runs.csv, summary.csv, README.md, configs/} from `rows`; returns the folder.

    add=True puts `rows` beside those the board already holds (a group that finished after the board was
    first published), keeping its title and notes unless new ones are given. replace=True does the same after
    dropping the board's rows of every (agent, dataset) group that `rows` hold. A group's configuration comes
    from its run folder's run.yaml or, when that is gone (runs trained on another machine), from the
    board's own configs/ file with the same hash."""
    if not NAME_PATTERN.match(name):
        raise OfflineRLError(f"leaderboard name {name!r}: use letters, digits, '.', '_' and '-'")
    root = Path(root) if root is not None else results_root()
    target = root / name
    if add and replace:
        raise OfflineRLError("give --add or --replace, not both")
    if add or replace:
        if not (target / "runs.csv").is_file():
            raise OfflineRLError(f"no leaderboard {target} to add to (no runs.csv): publish it without "
                                 f"{'--add' if add else '--replace'}")
        held = results.read_rows(target / "runs.csv")
        if replace:
            groups = {(r["agent"], r["dataset"]) for r in rows}
            held = [r for r in held if (r["agent"], r["dataset"]) not in groups]
        on_board = {(r["agent"], r["dataset"], r["seed"], r.get("task", "")) for r in held}
        again = sorted({f"{r['agent']} on {r['dataset']}" for r in rows
                        if (r["agent"], r["dataset"], r["seed"], r.get("task", "")) in on_board})
        if again:
            raise OfflineRLError(f"{', '.join(again)}: seeds already on {target}; publish with --force "
                                 f"to replace the board")
        old_title, old_notes = _heading((target / "README.md").read_text() if (target / "README.md").exists()
                                        else "")
        title, notes = title or old_title, notes or old_notes
        rows = held + rows
        force = True
    check_comparable(rows)
    if target.exists() and not force:
        raise OfflineRLError(f"leaderboard {target} exists: pass --force to replace it (or --add to add rows)")
    root.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (r["agent"], r["dataset"], r["seed"], r.get("task", "")))
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    try:
        _write_rows(staging / "runs.csv", rows)
        write_text_atomic(staging / "summary.csv", results.format_table(results.aggregate(rows), fmt="csv"))
        configs = {}
        for (agent, dataset), g in _groups(rows).items():
            config = recorded_config(g) or _published_config(target, agent, dataset, g[0]["config_hash"])
            if config is not None:
                configs[(agent, dataset)] = _config_file(agent, dataset)
                write_text_atomic(staging / "configs" / configs[(agent, dataset)],
                                  yaml.safe_dump(config, sort_keys=False))
        drawn = draw_plots(staging, rows)
        write_text_atomic(staging / "README.md", readme(name, rows, title, notes, configs, drawn))
        if target.exists():  # files the board's authors keep beside it (scripts, notes) are not publish's to drop
            for entry in target.iterdir():
                if entry.name in BOARD_FILES:
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, staging / entry.name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(entry, staging / entry.name)
        os.chmod(staging, 0o777 & ~current_umask())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.old."))
            os.replace(target, old / name)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def boards(root: str | os.PathLike | None = None) -> list[dict]:
    """The published leaderboards under `root`: name, agents, datasets, seeds per group and steps."""
    root = Path(root) if root is not None else results_root()
    found = []
    for folder in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".")):
        runs = folder / "runs.csv"
        if not runs.is_file():
            continue
        rows = results.read_rows(runs)
        found.append({"name": folder.name, "agents": _distinct(rows, "agent"),
                      "datasets": _distinct(rows, "dataset"), "rows": len(rows),
                      "steps": _distinct(rows, "steps")})
    return found

