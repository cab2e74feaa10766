"""Results: the per-seed result row, the results table file it is appended to, aggregation and export.

A run appends one row per seed to a CSV results table (docs/design.md §6). Several runs may finish at the same
moment and append to the same table, so `append_rows` holds an exclusive lock while it writes. A row is
validated before anything is written: every field present, no unknown field, and every number finite, so a
diverged (NaN) run can never land in the table as a score.

Aggregates are computed from the per-seed rows, separately for the last ("final") and the best evaluation:
mean, std, interquartile mean (IQM) and a bootstrap confidence interval of the IQM. Scores are normalised
scores, so one agent's scores can also be pooled across datasets; that "all datasets" row uses a stratified
bootstrap (see `_stratified_bootstrap_ci`).

Risk: each row also holds the lower tail of its last evaluation's episodes, the value at risk (the
RISK_LEVEL quantile of the returns) and the conditional value at risk (the mean of the returns at or below
it), as normalised scores; `offrl table` shows their means over seeds. Rows are grouped by the evaluation
they ran under too (`eval_perturbation`), so standard and perturbed evaluations stand side by side.

Safety: on a tabular env whose policies are evaluated exactly (ICU-Sepsis), a row also holds the last
evaluation's true survival, survival when inadmissible actions kill, the inadmissible-action rate, the mean
cost, and (model-based agents) the guardian-OOD rate and the survival the agent's model predicts
(SAFETY_FIELDS); `offrl table` shows their means beside the normalised score.
"""
from __future__ import annotations

import csv
import inspect
import io
import math
import os
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.stats

from offrl.errors import OfflineRLError
from offrl.lock import FileLock
from offrl.tasks import AGGREGATE as AGGREGATE_TASK

RESULT_FIELDS = [
    "date",             # ISO-8601 time the run finished
    "agent",
    "agent_version",    # git revision of the code that trained it ("A..B": started at A, resumed under B)
    "dataset",
    "dataset_source",
    "dataset_version",
    "seed",
    "task",             # "" for a single-task dataset; a task of its task set, or "all tasks" (IQM over tasks)
    "steps",            # gradient updates
    "eval_every",       # updates between evaluations
    "eval_episodes",    # episodes per evaluation
    "final_score",      # normalised score of the last evaluation
    "best_score",       # best normalised score over all evaluations
    "final_return",     # raw return of the last evaluation
    "best_return",
    "ref_min_score",    # reference returns that define the normalisation
    "ref_max_score",
    "config_hash",
    "device",
    "hardware",
    "torch_version",
    "wall_clock_s",
    "updates_per_s",
    "run_dir",
    # The online phase (empty for a run without one).
    "online_steps",     # environment steps per seed environment after the offline phase
    "offline_score",    # normalised score at the end of the offline phase (empty for an online-only run)
    "online_score_25",  # normalised score after 25%, 50% and 75% of the online steps (final_score is the end)
    "online_score_50",
    "online_score_75",
    # Risk and the evaluation's conditions.
    "final_var10",      # normalised VaR at 10% of the last evaluation's episode returns (empty: not recorded)
    "final_cvar10",     # normalised CVaR at 10%: the mean of the episodes at or below the VaR
    "eval_perturbation",  # the evaluation's perturbation (offrl/evaluation.py), "none" for the standard one
    # Safety, exact on a tabular env (ICU-Sepsis), for the last evaluation's policy (empty elsewhere).
    "true_survival",       # survival probability by exact policy evaluation in the true MDP
    "survival_terminate",  # the same when every inadmissible action kills (the env's `terminate` strategy)
    "inadmissible_rate",   # inadmissible actions per treatment step, weighted by the policy's own visits
    "mean_cost",           # safety cost per treatment step (envs/sepsis.py's proxy for physiological bounds)
    "guardian_ood_rate",   # share of the agent's model-rollout steps outside its guardian (model-based agents)
    "model_survival",      # survival the agent's own learned model predicts for the policy
]
SAFETY_FIELDS = ("true_survival", "survival_terminate", "inadmissible_rate", "mean_cost", "guardian_ood_rate",
                 "model_survival")
SAFETY_LABELS = {"true_survival": "true surv", "survival_terminate": "surv terminate",
                 "inadmissible_rate": "inadmissible", "mean_cost": "cost/step", "guardian_ood_rate": "guardian OOD",
                 "model_survival": "model surv"}
ONLINE_SCORES = ("offline_score", "online_score_25", "online_score_50", "online_score_75")
PHASE_LABELS = {"offline_score": "offline", "online_score_25": "online 25%", "online_score_50": "online 50%",
                "online_score_75": "online 75%"}
# Fields added after tables were first written: a table without them still reads, with these values.
LATER_FIELDS = {"task": "", "online_steps": None, **{name: None for name in ONLINE_SCORES}, "final_var10": None,
                "final_cvar10": None, "eval_perturbation": "none", **{name: None for name in SAFETY_FIELDS}}
# Numbers that may be empty (None): not recorded, or no such phase. Never a made-up number.
OPTIONAL_INT_FIELDS = frozenset({"online_steps"})
OPTIONAL_FLOAT_FIELDS = frozenset({*ONLINE_SCORES, "final_var10", "final_cvar10", *SAFETY_FIELDS})
RISK_LEVEL = 0.1  # the tail of VaR and CVaR: the worst 10% of a seed's evaluation episodes
INT_FIELDS = frozenset({"seed", "steps", "eval_every", "eval_episodes"})
FLOAT_FIELDS = frozenset({
    "final_score", "best_score", "final_return", "best_return", "ref_min_score", "ref_max_score",
    "wall_clock_s", "updates_per_s",
})
SCORE_KINDS = ("final", "best")
ALL_DATASETS = "all datasets"


# ---------------------------------------------------------------------------------------------- rows

def _coerce_row(row: dict) -> dict:
    """The row with typed values, or ValueError saying which field is wrong."""
    if not isinstance(row, dict):
        raise ValueError(f"a result row must be a dict, got {type(row).__name__}")
    row = {**{k: v for k, v in LATER_FIELDS.items() if k not in row}, **row}
    missing = [f for f in RESULT_FIELDS if f not in row]
    unknown = sorted(set(row) - set(RESULT_FIELDS))
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing field(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown field(s) {', '.join(map(str, unknown))}")
        raise ValueError(f"result row has {'; '.join(parts)}")
    typed = {}
    for name in RESULT_FIELDS:
        value = row[name]
        if name in OPTIONAL_INT_FIELDS | OPTIONAL_FLOAT_FIELDS and value in (None, ""):
            typed[name] = None
        elif name in INT_FIELDS or name in OPTIONAL_INT_FIELDS:
            typed[name] = _as_int(name, value)
        elif name in FLOAT_FIELDS or name in OPTIONAL_FLOAT_FIELDS:
            typed[name] = _as_finite_float(name, value)
        else:
            if value is None:
                raise ValueError(f"result field {name} is None")
            typed[name] = str(value)
    return typed


def _as_int(name: str, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"result field {name} must be an integer, got {value!r}")
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"result field {name} must be an integer, got {value!r}") from None
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"result field {name} must be an integer, got {value!r}") from None
    if not math.isfinite(as_float) or as_float != int(as_float):
        raise ValueError(f"result field {name} must be an integer, got {value!r}")
    return int(value)


def _as_finite_float(name: str, value) -> float:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"result field {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"result field {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        # A run whose score is NaN or infinite diverged: it is reported as a failure, never as a score.
        raise ValueError(f"result field {name} is {number}: a non-finite run is never written as a score")
    return number


def append_rows(path: str | os.PathLike, rows: list[dict]) -> None:
    """Appends `rows` to the CSV results table at `path`, creating it (with a header) if new or empty.

    Every row is validated before anything is written, so a bad row leaves the table untouched. Two
    processes may append at once: each holds an exclusive lock (offrl/lock.py) on the sidecar `path + ".lock"`
    while it checks the header, writes and fsyncs, so rows never interleave and the header is written once.
    (The lock is on a sidecar rather than on the table so that the table itself could be replaced
    atomically by a future tool without invalidating a lock someone holds.)
    """
    _append(path, [_coerce_row(row) for row in rows], same_run=None)


def append_rows_once(path: str | os.PathLike, rows: list[dict], same_run) -> int:
    """Like `append_rows`, but a row is left out when the table already holds a row of the same seed whose
    run_dir `same_run(run_dir)` accepts (the same run folder), so finishing a run twice appends its rows once.
    Returns how many rows were appended."""
    return _append(path, [_coerce_row(row) for row in rows], same_run=same_run)


def _append(path, typed_rows: list[dict], same_run) -> int:
    if not typed_rows:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock").acquire(wait=True):
        with open(path, "a+", newline="", encoding="utf-8") as table:
            table.seek(0)
            first_line = table.readline()
            size = table.seek(0, os.SEEK_END)
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            if size == 0:
                writer.writerow(RESULT_FIELDS)
            else:
                header = next(csv.reader([first_line]), [])
                if header != RESULT_FIELDS:
                    raise OfflineRLError(
                        f"results table {path} has a different header than this version of offrl writes; "
                        f"append to a new file")
                if same_run is not None:
                    table.seek(0)
                    at = [RESULT_FIELDS.index(k) for k in ("run_dir", "seed", "task")]
                    present = {tuple(values[i] for i in at)
                               for values in list(csv.reader(table))[1:] if len(values) == len(RESULT_FIELDS)}
                    recorded = {(seed, task) for run_dir, seed, task in present if same_run(run_dir)}
                    typed_rows = [row for row in typed_rows if (str(row["seed"]), row["task"]) not in recorded]
                    if not typed_rows:
                        return 0
                table.seek(size - 1)
                if table.read(1) != "\n":
                    # The last write was cut short (a killed process): start on a fresh line so the new
                    # rows stay well formed; read_rows reports the torn line.
                    buffer.write("\n")
            for row in typed_rows:
                writer.writerow([_format_value(row.get(name)) for name in RESULT_FIELDS])
            table.write(buffer.getvalue())
            table.flush()
            os.fsync(table.fileno())
    return len(typed_rows)


def _format_value(value) -> str:
    if value is None:  # an optional field not recorded
        return ""
    # repr of a float is the shortest string that parses back to the same float: rows round-trip exactly.
    return repr(value) if isinstance(value, float) else "" if value is None else str(value)


def select_rows(rows: list[dict], agents=None, datasets=None, purpose: str = "to use") -> list[dict]:
    """The rows of the given agents and datasets (None: all); an error names what matched nothing."""
    for field, wanted in (("agent", agents), ("dataset", datasets)):
        if wanted:
            present = {r[field] for r in rows}
            missing = [w for w in wanted if w not in present]
            if missing:
                raise OfflineRLError(f"no result rows for {field} {', '.join(missing)} "
                                     f"(the table has: {', '.join(sorted(present)) or 'nothing'})")
            rows = [r for r in rows if r[field] in wanted]
    if not rows:
        raise OfflineRLError(f"no result rows {purpose}")
    return rows


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The rows of the results table at `path`, with integers and floats parsed back.

    Columns beyond RESULT_FIELDS (a table written by a newer offrl) are kept as strings.
    """
    path = Path(path)
    if path.is_dir():
        raise OfflineRLError(f"results table {path} is a folder, not a CSV file")
    if not path.is_file():
        raise OfflineRLError(f"results table not found: {path}")
    try:
        return _read_rows(path)
    except UnicodeDecodeError as error:
        raise OfflineRLError(f"results table {path} is not a CSV text file (byte {error.start} is not UTF-8)") \
            from None
    except csv.Error as error:
        raise OfflineRLError(f"results table {path} is not a readable CSV file: {error}") from None
    except OSError as error:
        raise OfflineRLError(f"cannot read results table {path}: {error.strerror}") from None


def _read_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as table:
        reader = csv.reader(table)
        header = next(reader, None)
        if header is None:
            return []
        missing = [f for f in RESULT_FIELDS if f not in header and f not in LATER_FIELDS]
        if missing:
            raise OfflineRLError(f"results table {path} lacks column(s): {', '.join(missing)}")
        rows = []
        for values in reader:
            line = reader.line_num
            if not values:
                continue
            if len(values) != len(header):
                raise OfflineRLError(
                    f"results table {path}, line {line}: {len(values)} values for {len(header)} columns")
            raw = dict(zip(header, values))
            extra = {k: v for k, v in raw.items() if k not in RESULT_FIELDS}
            try:
                row = _coerce_row({k: v for k, v in raw.items() if k in RESULT_FIELDS})
            except ValueError as error:
                raise OfflineRLError(f"results table {path}, line {line}: {error}") from None
            row.update(extra)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------- risk

def value_at_risk(returns, level: float = RISK_LEVEL) -> float:
    """The empirical `level` quantile of episode returns, from below: the ceil(level·N)-th smallest return.
    With N episodes it rests on ceil(level·N) of them (one when N <= 10), so it means little below ~50."""
    ordered = np.sort(np.asarray(returns, dtype=float).reshape(-1))
    return float(ordered[max(1, math.ceil(level * ordered.size - 1e-9)) - 1])


def conditional_value_at_risk(returns, level: float = RISK_LEVEL) -> float:
    """The mean of the ceil(level·N) smallest episode returns (expected shortfall): the mean of the tail
    whose upper end is `value_at_risk`."""
    ordered = np.sort(np.asarray(returns, dtype=float).reshape(-1))
    return float(ordered[:max(1, math.ceil(level * ordered.size - 1e-9))].mean())


RISK_COLUMNS = ("final_var10", "final_cvar10")


def label_configs(rows: list[dict]) -> list[dict]:
    """The rows, with "agent [first 6 digits of config_hash]" as the agent of every row whose agent ran more
    than one configuration on the same dataset (and evaluation); other rows keep their agent's name."""
    configs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        configs[(str(row["agent"]), group_dataset(row))].add(str(row.get("config_hash", "")))
    return [dict(row, agent=f"{row['agent']} [{str(row.get('config_hash', ''))[:6]}]")
            if len(configs[(str(row["agent"]), group_dataset(row))]) > 1 else row for row in rows]


def group_dataset(row: dict) -> str:
    """The dataset a row is grouped under: its name, with the evaluation's perturbation when there is one."""
    perturbation = str(row.get("eval_perturbation") or "none")
    return str(row["dataset"]) if perturbation == "none" else f"{row['dataset']} [{perturbation}]"


def _risk_means(rows: list[dict]) -> dict:
    """Mean over seeds of each risk column; NaN when no row of the group recorded it."""
    means = {}
    for column in RISK_COLUMNS:
        values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
        means[f"{column}_mean"] = float(np.mean(values)) if values else float("nan")
    return means


def _safety_means(rows: list[dict]) -> dict:
    """Mean over seeds of each safety column some row of the group recorded (none: no keys)."""
    means = {}
    for column in SAFETY_FIELDS:
        values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
        if values:
            means[f"{column}_mean"] = float(np.mean(values))
    return means


def safety_summary(rows: list[dict]) -> str:
    """"true surv 0.801, inadmissible 0.05, ..." over seeds, for a run's closing note ("" without them)."""
    parts = []
    for column, mean in _safety_means(rows).items():
        parts.append(f"{SAFETY_LABELS[column[:-len('_mean')]]} {mean:.3f}")
    return ", ".join(parts)


# -------------------------------------------------------------------------------------- aggregation

def iqm(x) -> float:
    """Interquartile mean: the mean of the middle 50% of the values (25% trimmed from each end)."""
    return float(scipy.stats.trim_mean(np.asarray(x, dtype=float), 0.25))


def _iqm_along(samples, axis=-1):
    return scipy.stats.trim_mean(samples, 0.25, axis=axis)


# scipy >= 1.15 takes the generator as `rng`; older versions only as `random_state`.
_BOOTSTRAP_RNG_KEYWORD = "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


def _bootstrap_ci(x: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the IQM of one (agent, dataset) group's seeds."""
    value = iqm(x)
    # One seed, or seeds that all agree, have no spread to resample: scipy refuses the former and warns
    # about the latter, and the honest interval is the value itself.
    if x.size < 2 or np.ptp(x) == 0:
        return value, value
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", getattr(scipy.stats, "DegenerateDataWarning", RuntimeWarning))
        result = scipy.stats.bootstrap(
            (x,), _iqm_along, n_resamples=n_boot, confidence_level=confidence, method="percentile",
            vectorized=True, **{_BOOTSTRAP_RNG_KEYWORD: np.random.default_rng(seed)})
    lo, hi = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return value, value
    return lo, hi


def _stratified_bootstrap_ci(groups: list[np.ndarray], n_boot: int, confidence: float,
                             seed: int) -> tuple[float, float]:
    """Percentile CI of the IQM of one agent's scores pooled over its datasets, by stratified bootstrap.

    Each resample draws, for every dataset independently, as many seeds as that dataset has, with
    replacement from that dataset's own seeds; the resampled scores of all datasets are pooled and the
    statistic is their IQM. Resampling within each dataset (rather than from the pooled scores) keeps each
    dataset's weight in the pool fixed, so the interval reflects seed-to-seed variation only and not
    chance shifts in which datasets are represented (Agarwal et al. 2021, "Deep RL at the Edge of the
    Statistical Precipice"). The CI is the (1-confidence)/2 and (1+confidence)/2 quantiles of the
    resampled IQMs.
    """
    pooled = np.concatenate(groups)
    value = iqm(pooled)
    if pooled.size < 2 or np.ptp(pooled) == 0:
        return value, value
    resampled = np.concatenate(stratified_resample(groups, n_boot, np.random.default_rng(seed)), axis=1)
    lo, hi = percentile_interval(_iqm_along(resampled, axis=1), confidence)
    return float(lo), float(hi)


def stratified_resample(groups: list[np.ndarray], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One (n_boot, len(g)) array per group g: each row draws len(g) of g's values with replacement, every
    group on its own. The statistics of a stratified bootstrap (the pooled IQM above, the plots' performance
    profiles and probabilities of improvement) are computed row by row from these."""
    return [g[rng.integers(0, g.size, size=(n_boot, g.size))] for g in groups]


def percentile_interval(statistics: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile bootstrap interval: the (1-confidence)/2 and (1+confidence)/2 quantiles of the
    resampled statistics along axis 0 (one resample a row)."""
    alpha = 1.0 - confidence
    lo, hi = np.quantile(statistics, [alpha / 2, 1 - alpha / 2], axis=0)
    return lo, hi


def _summary(values: np.ndarray, kind: str, ci: tuple[float, float]) -> dict:
    return {
        f"{kind}_mean": float(np.mean(values)),
        f"{kind}_std": float(np.std(values, ddof=1)) if values.size > 1 else 0.0,
        f"{kind}_iqm": iqm(values),
        f"{kind}_ci_lo": ci[0],
        f"{kind}_ci_hi": ci[1],
    }


def aggregate(rows: list[dict], n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> list[dict]:
    """Per-(agent, dataset) statistics of the final and best normalised scores, plus per-agent pooled rows.

    A multi-task dataset's rows (offrl/tasks.py) give one group per task and one for its "all tasks" rows,
    which stand for the dataset (in the pooled row too); the other groups have task "".
    Each returned dict has agent, dataset, task, n_datasets, n (seeds), confidence and, for kind in final/best,
    {kind}_mean, {kind}_std (ddof=1; 0 for one seed), {kind}_iqm, {kind}_ci_lo, {kind}_ci_hi (percentile
    bootstrap CI of the IQM). An agent evaluated on two or more datasets also gets a row with dataset
    "all datasets" over all its seeds pooled, with a stratified-bootstrap CI; with one dataset that row
    would repeat the dataset's own row, so it is left out. Rows are ordered by agent, then dataset, with
    the pooled row last. Every group's bootstrap uses a generator seeded with `seed` alone, so a group's
    interval does not change when other agents or datasets are added to the table.

    Every row of a group counts as one seed: a seed run twice and appended twice counts twice. Rows of one
    agent on one dataset trained with different configurations (a `--set` sweep, an ablation flag) are not
    pooled: each configuration is its own group, labelled "agent [config hash]" (see `label_configs`).
    """
    rows = label_configs(rows)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    scores: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: {k: [] for k in SCORE_KINDS})
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    task_scores: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: {k: [] for k in SCORE_KINDS})
    task_grouped: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        key, task = (str(row["agent"]), group_dataset(row)), str(row.get("task", ""))
        # A multi-task run's per-task rows get groups of their own; its "all tasks" rows stand for the dataset.
        if task in ("", AGGREGATE_TASK):
            grouped[key].append(row)
            group = scores[key]
        else:
            task_grouped[(*key, task)].append(row)
            group = task_scores[(*key, task)]
        for kind in SCORE_KINDS:
            group[kind].append(_as_finite_float(f"{kind}_score", row[f"{kind}_score"]))
    tasks_of = defaultdict(list)
    for agent, dataset, task in sorted(task_scores):
        tasks_of[(agent, dataset)].append(task)

    # Online-phase scores: the mean over the group's rows that have one, shown beside the final score.
    phase_scores: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for name in ONLINE_SCORES:
            if row.get(name) not in (None, ""):
                phase_scores[(str(row["agent"]), group_dataset(row))][name].append(float(row[name]))

    by_agent: dict[str, list[str]] = defaultdict(list)
    for agent, dataset in sorted(scores):
        by_agent[agent].append(dataset)

    aggregated = []
    for agent, datasets in by_agent.items():
        for dataset in datasets:
            for task in tasks_of[(agent, dataset)]:
                group = task_scores[(agent, dataset, task)]
                entry = {"agent": agent, "dataset": dataset, "task": task, "n_datasets": 1,
                         "n": len(group["final"]), "confidence": confidence}
                for kind in SCORE_KINDS:
                    values = np.asarray(group[kind], dtype=float)
                    entry.update(_summary(values, kind, _bootstrap_ci(values, n_boot, confidence, seed)))
                entry.update(_risk_means(task_grouped[(agent, dataset, task)]))
                aggregated.append(entry)
            group = scores[(agent, dataset)]
            entry = {"agent": agent, "dataset": dataset, "task": AGGREGATE_TASK if tasks_of[(agent, dataset)] else "",
                     "n_datasets": 1, "n": len(group["final"]), "confidence": confidence}
            for kind in SCORE_KINDS:
                values = np.asarray(group[kind], dtype=float)
                entry.update(_summary(values, kind, _bootstrap_ci(values, n_boot, confidence, seed)))
            for name, values in phase_scores[(agent, dataset)].items():
                entry[f"{name}_mean"] = float(np.mean(values))
            entry.update(_risk_means(grouped[(agent, dataset)]))
            entry.update(_safety_means(grouped[(agent, dataset)]))
            aggregated.append(entry)
        # Pooled over datasets under the standard evaluation only: a perturbed one is another test, not a dataset.
        datasets = [d for d in datasets if all(group_dataset(r) == r["dataset"] for r in grouped[(agent, d)])]
        if len(datasets) > 1:
            entry = {"agent": agent, "dataset": ALL_DATASETS, "task": "", "n_datasets": len(datasets),
                     "n": sum(len(scores[(agent, d)]["final"]) for d in datasets), "confidence": confidence}
            for kind in SCORE_KINDS:
                groups = [np.asarray(scores[(agent, d)][kind], dtype=float) for d in datasets]
                ci = _stratified_bootstrap_ci(groups, n_boot, confidence, seed)
                entry.update(_summary(np.concatenate(groups), kind, ci))
            entry.update(_risk_means([r for d in datasets for r in grouped[(agent, d)]]))
            aggregated.append(entry)
    return aggregated


# ------------------------------------------------------------------------------------------- export

def _confidence_label(aggregated: list[dict]) -> str:
    levels = {row.get("confidence", 0.95) for row in aggregated} or {0.95}
    if len(levels) == 1:
        return f"{100 * levels.pop():g}% CI"
    return "CI"


def format_table(aggregated: list[dict], fmt: str = "text", which=SCORE_KINDS) -> str:
    """The output of `aggregate` as an aligned text table, a GitHub markdown table, or CSV.

    text and markdown show, per score kind in `which`, "mean ± std", the IQM and the IQM's CI "[lo, hi]",
    to 2 decimals. csv has one numeric column per statistic at full precision, for other programs.
    """
    which = (which,) if isinstance(which, str) else tuple(which)
    unknown = [k for k in which if k not in SCORE_KINDS]
    if unknown or not which:
        raise ValueError(f"which must name some of {SCORE_KINDS}, got {which!r}")
    if fmt == "csv":
        return _format_csv(aggregated, which)
    if fmt not in ("text", "markdown"):
        raise ValueError(f"fmt must be 'text', 'markdown' or 'csv', got {fmt!r}")

    ci_label = _confidence_label(aggregated)
    by_task = any(row.get("task") for row in aggregated)  # multi-task datasets: one line per task too
    header = ["agent", "dataset"] + (["task"] if by_task else []) + ["n"]
    for kind in which:
        header += [f"{kind} mean ± std", f"{kind} IQM", f"{kind} IQM {ci_label}"]
    risk = "final" in which
    if risk:
        header += ["final VaR10", "final CVaR10"]
    body = []
    for row in aggregated:
        cells = [str(row["agent"]), str(row["dataset"])] + ([str(row.get("task", ""))] if by_task else []) + [
            str(row["n"])]
        for kind in which:
            cells += [f"{row[f'{kind}_mean']:.2f} ± {row[f'{kind}_std']:.2f}",
                      f"{row[f'{kind}_iqm']:.2f}",
                      f"[{row[f'{kind}_ci_lo']:.2f}, {row[f'{kind}_ci_hi']:.2f}]"]
        if risk:
            cells += [_number_or_dash(row.get(f"{column}_mean")) for column in RISK_COLUMNS]
        body.append(cells)
    phase_columns = [name for name in ONLINE_SCORES if any(f"{name}_mean" in row for row in aggregated)]
    if phase_columns:  # runs with an online phase: the mean score at the switch and along the online phase
        header += [PHASE_LABELS[name] for name in phase_columns]
        for row, cells in zip(aggregated, body):
            cells += [f"{row[f'{name}_mean']:.2f}" if f"{name}_mean" in row else "" for name in phase_columns]

    safety_columns = [name for name in SAFETY_FIELDS if any(f"{name}_mean" in row for row in aggregated)]
    if safety_columns:  # a tabular env's exact safety metrics, beside the normalised score
        header += [SAFETY_LABELS[name] for name in safety_columns]
        for row, cells in zip(aggregated, body):
            cells += [f"{row[f'{name}_mean']:.3f}" if f"{name}_mean" in row else "" for name in safety_columns]

    if fmt == "markdown":
        def line(cells):
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
        names = 3 if by_task else 2
        align = ["---"] * names + ["---:"] * (len(header) - names)
        return "\n".join([line(header), "| " + " | ".join(align) + " |"] + [line(c) for c in body]) + "\n"

    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]

    def line(cells):
        # Names left-aligned, numbers right-aligned so that decimal points line up.
        padded = [c.ljust(w) if i < (3 if by_task else 2) else c.rjust(w)
                  for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(padded).rstrip()
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(c) for c in body]) + "\n"


def _number_or_dash(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _format_csv(aggregated: list[dict], which: tuple[str, ...]) -> str:
    columns = ["agent", "dataset", "task", "n_datasets", "n", "confidence"]
    for kind in which:
        columns += [f"{kind}_{stat}" for stat in ("mean", "std", "iqm", "ci_lo", "ci_hi")]
    columns += [f"{name}_mean" for name in ONLINE_SCORES if any(f"{name}_mean" in row for row in aggregated)]
    if "final" in which:
        columns += [f"{column}_mean" for column in RISK_COLUMNS]
    columns += [f"{name}_mean" for name in SAFETY_FIELDS if any(f"{name}_mean" in row for row in aggregated)]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in aggregated:
        writer.writerow([_format_value(row[c]) if c in row else "" for c in columns])
    return buffer.getvalue()
