"""Pictures of results: learning curves from run folders, and aggregate plots from result rows.

Learning curves read each run folder's run.yaml (agent, dataset) and eval.csv (normalised score per seed at
every evaluation): one panel per dataset, one line per agent, the mean over seeds (every seed of every run of
that agent and dataset) with a 95% percentile-bootstrap band of that mean.

Aggregate plots use the definitions of rliable (Agarwal et al., "Deep Reinforcement Learning at the Edge of
the Statistical Precipice", NeurIPS 2021), with the stratified bootstrap of offrl.results: every resample
draws each dataset's seeds from that dataset alone, so each dataset keeps its weight.
- IQM: the interquartile mean with its 95% CI per agent, per dataset and pooled over the agent's datasets:
  the very numbers of `offrl table` (results.aggregate).
- Performance profile: for a threshold tau, the fraction of an agent's runs that score above tau, averaged
  over its datasets (each dataset weighs the same), with a 95% band.
- Probability of improvement P(X > Y): on each dataset both agents ran, the chance that a random run of X
  scores higher than a random run of Y (ties count half; the Mann-Whitney U statistic over m*n), averaged
  over those datasets, with a 95% CI from resampling each agent's runs within each dataset.

Figures are matplotlib `Figure`s built without pyplot (no display, no global backend switch, so importing
this in a notebook changes nothing there); `save` writes PNG or SVG by the output's suffix, atomically.
"""
from __future__ import annotations

import csv
import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from offrl import results
from offrl.atomic import atomic_path
from offrl.errors import OfflineRLError

FORMATS = (".png", ".svg")
KINDS = ("curves", "iqm", "profile", "poi")
SCORE_AXIS = "normalised score (0 = reference min, 100 = reference max)"
N_BOOT = 2000
CONFIDENCE = 0.95
SEED = 0  # every band's bootstrap starts from this seed: a plot drawn twice is the same picture


# ------------------------------------------------------------------------------------------- inputs

@dataclass
class RunCurve:
    """The evaluations of one run folder: scores[i, j] is seed seeds[j]'s normalised score at steps[i]."""
    run_dir: Path
    agent: str
    dataset: str
    seeds: list[int]
    steps: np.ndarray
    scores: np.ndarray


def read_run_curve(run_dir: str | Path) -> RunCurve:
    """A run folder's learning curve, or OfflineRLError naming what is missing."""
    run_dir = Path(run_dir)
    try:
        spec = yaml.safe_load((run_dir / "run.yaml").read_text())
        agent, dataset = str(spec["agent"]), str(spec["dataset"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise OfflineRLError(f"{run_dir} is not a run folder (no readable run.yaml)") from None
    by_step: dict[int, dict[int, float]] = defaultdict(dict)
    try:
        with open(run_dir / "eval.csv", newline="") as f:
            for row in csv.DictReader(f):
                by_step[int(row["step"])][int(row["seed"])] = float(row["normalized_score"])
    except FileNotFoundError:
        raise OfflineRLError(f"{run_dir} has no eval.csv (no evaluation has finished yet)") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise OfflineRLError(f"{run_dir}/eval.csv is not an evaluation table offrl wrote ({exc})") from None
    if not by_step:
        raise OfflineRLError(f"{run_dir}/eval.csv holds no evaluation yet")
    steps = sorted(by_step)
    seeds = sorted({s for scores in by_step.values() for s in scores})
    scores = np.array([[by_step[t].get(s, np.nan) for s in seeds] for t in steps])
    return RunCurve(run_dir, agent, dataset, seeds, np.array(steps), scores)


def find_run_folders(paths) -> list[Path]:
    """Run folders (holding a run.yaml) among `paths`, a folder of run folders standing for those in it."""
    found = []
    for path in map(Path, paths):
        if (path / "run.yaml").is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if (p / "run.yaml").is_file())
            if not inside:
                raise OfflineRLError(f"no run folders (folders with a run.yaml) in {path}")
            found += inside
        else:
            raise OfflineRLError(f"{path} is neither a run folder nor a folder of run folders")
    return found


def read_table(path: str | Path) -> list[dict]:
    """The result rows of a results table, or of a published board's folder (its runs.csv)."""
    path = Path(path)
    return results.read_rows(path / "runs.csv" if path.is_dir() else path)


def curves_of_rows(rows: list[dict]) -> tuple[list[RunCurve], list[tuple[str, str]]]:
    """The learning curves of the rows' run folders that are still on disk, and the (agent, dataset) groups
    none of whose run folders is (published rows outlive the folders they were trained in)."""
    curves, missing = [], []
    for (agent, dataset), group in sorted(_by_group(rows).items()):
        found = [read_run_curve(d) for d in sorted({r["run_dir"] for r in group})
                 if (Path(d) / "eval.csv").is_file() and (Path(d) / "run.yaml").is_file()]
        for curve in found:  # the rows' dataset name (what the table shows), not the name the run was given
            curve.dataset = dataset
        curves += found
        if not found:
            missing.append((agent, dataset))
    return curves, missing


def select_rows(rows: list[dict], agents=None, datasets=None) -> list[dict]:
    """The rows of the given agents and datasets (None: all); an error names what matched nothing."""
    return results.select_rows(rows, agents, datasets, purpose="to plot")


def _by_group(rows) -> dict[tuple[str, str], list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["agent"], r["dataset"])].append(r)
    return groups


def _scores(rows, score: str) -> dict[str, dict[str, np.ndarray]]:
    """agent -> dataset -> that group's per-seed scores of `score` (final or best)."""
    if score not in results.SCORE_KINDS:
        raise OfflineRLError(f"score must be one of {', '.join(results.SCORE_KINDS)}, got {score!r}")
    table: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for (agent, dataset), group in sorted(_by_group(rows).items()):
        table[agent][dataset] = np.array([r[f"{score}_score"] for r in group], dtype=float)
    return dict(table)


# -------------------------------------------------------------------------------------- statistics

def mean_band(values: np.ndarray, n_boot: int = N_BOOT, confidence: float = CONFIDENCE,
              seed: int = SEED) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of `values` and the percentile-bootstrap CI of that mean."""
    values = values[np.isfinite(values)]
    mean = float(values.mean())
    if values.size < 2 or np.ptp(values) == 0:
        return mean, mean, mean
    resampled = results.stratified_resample([values], n_boot, np.random.default_rng(seed))[0]
    lo, hi = results.percentile_interval(resampled.mean(axis=1), confidence)
    return mean, float(lo), float(hi)


def performance_profile(groups: list[np.ndarray], taus: np.ndarray, n_boot: int = N_BOOT,
                        confidence: float = CONFIDENCE, seed: int = SEED):
    """(profile, lo, hi) at each tau: the fraction of runs scoring above tau, averaged over the groups
    (datasets), and its stratified-bootstrap band."""
    def fraction_above(per_group):  # each (..., n_g) -> (..., len(taus)), averaged over groups
        return np.mean([(g[..., None] > taus).mean(axis=-2) for g in per_group], axis=0)
    profile = fraction_above(groups)
    resampled = results.stratified_resample(groups, n_boot, np.random.default_rng(seed))
    lo, hi = results.percentile_interval(fraction_above(resampled), confidence)
    return profile, lo, hi


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) with ties counted half, over the last two axes' pairs (x: (..., m), y: (..., n))."""
    diff = x[..., :, None] - y[..., None, :]
    return ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(-2, -1))


def probability_of_improvement(x_groups: list[np.ndarray], y_groups: list[np.ndarray], n_boot: int = N_BOOT,
                               confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float, float]:
    """(P(X > Y), lo, hi) averaged over paired groups (datasets both agents ran), with a stratified
    bootstrap CI that resamples X's and Y's runs within each dataset independently."""
    value = float(np.mean([_improvement(x, y) for x, y in zip(x_groups, y_groups)]))
    rng = np.random.default_rng(seed)
    xs = results.stratified_resample(x_groups, n_boot, rng)
    ys = results.stratified_resample(y_groups, n_boot, rng)
    lo, hi = results.percentile_interval(np.mean([_improvement(x, y) for x, y in zip(xs, ys)], axis=0),
                                         confidence)
    return value, float(lo), float(hi)


# ------------------------------------------------------------------------------------------ figures

def _colors(agents) -> dict[str, tuple]:
    """One colour per agent, the same in every panel and, for the same agents, in every plot."""
    from matplotlib import colormaps

    palette = colormaps["tab10"].colors
    return {a: palette[i % len(palette)] for i, a in enumerate(sorted(agents))}


def _grid(n: int, width: float, height: float, max_cols: int = 3) -> tuple[Figure, list]:
    rows = math.ceil(n / max_cols)
    cols = math.ceil(n / rows)  # rows as full as they can be: 4 panels are 2 x 2, not 3 + 1
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _updates(x, _pos) -> str:
    return f"{x / 1e6:g}M" if abs(x) >= 1e6 else f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


def _legend_outside(fig: Figure, handles, labels) -> None:
    fig.legend(handles, labels, loc="outside right center", frameon=False, title="agent")


def curves_figure(curves: list[RunCurve], title: str | None = None, n_boot: int = N_BOOT) -> Figure:
    """Learning curves: one panel per dataset, one line per agent (mean over seeds) with its 95% band."""
    if not curves:
        raise OfflineRLError("no learning curves to plot")
    grouped: dict[str, dict[str, list[RunCurve]]] = defaultdict(lambda: defaultdict(list))
    for c in curves:
        grouped[c.dataset][c.agent].append(c)
    colors = _colors({c.agent for c in curves})
    fig, axes = _grid(len(grouped), 4.4, 3.3)
    handles = {}
    for ax, dataset in zip(axes, sorted(grouped)):
        for agent in sorted(grouped[dataset]):
            by_step: dict[int, list[float]] = defaultdict(list)
            for c in grouped[dataset][agent]:
                for step, row in zip(c.steps, c.scores):
                    by_step[int(step)] += list(row)
            steps = np.array(sorted(by_step))
            stats = np.array([mean_band(np.array(by_step[t]), n_boot=n_boot) for t in steps])
            (line,) = ax.plot(steps, stats[:, 0], color=colors[agent], lw=1.8, label=agent,
                              marker="o" if len(steps) == 1 else None)
            ax.fill_between(steps, stats[:, 1], stats[:, 2], color=colors[agent], alpha=0.2, lw=0, gid=agent)
            handles[agent] = line
        ax.set_title(dataset)
        ax.set_xlabel("updates (gradient steps per seed)")
        ax.set_ylabel("normalised score")
        ax.xaxis.set_major_formatter(FuncFormatter(_updates))
        ax.grid(alpha=0.3)
    _legend_outside(fig, list(handles.values()), list(handles))
    fig.suptitle(title or f"Learning curves: mean over seeds, band = {CONFIDENCE:.0%} bootstrap CI\n"
                          f"({SCORE_AXIS})", fontsize="medium")
    return fig


def iqm_figure(rows: list[dict], score: str = "final", title: str | None = None, n_boot: int = N_BOOT) -> Figure:
    """IQM with its 95% CI per agent: one panel per dataset and, with several datasets, one pooled over each
    agent's datasets (the "all datasets" rows of `offrl table`)."""
    _scores(rows, score)  # checks `score`
    aggregated = results.aggregate(rows, n_boot=n_boot, confidence=CONFIDENCE, seed=SEED)
    datasets = sorted({r["dataset"] for r in rows})
    agents = sorted({r["agent"] for r in rows})
    per_agent = {a: sorted({r["dataset"] for r in rows if r["agent"] == a}) for a in agents}
    panels = datasets + ([results.ALL_DATASETS] if len(datasets) > 1 else [])
    colors = _colors(agents)
    fig, axes = _grid(len(panels), 4.2, 0.55 * len(agents) + 1.6)
    for ax, panel in zip(axes, panels):
        entries = {e["agent"]: e for e in aggregated if e["dataset"] == panel}
        if panel == results.ALL_DATASETS:  # an agent on a single dataset has no pooled row: its own row is it
            entries.update({e["agent"]: e for e in aggregated if per_agent[e["agent"]] == [e["dataset"]]})
        shown = [a for a in agents if a in entries]
        for y, agent in enumerate(reversed(shown)):
            e = entries[agent]
            lo, hi, value = e[f"{score}_ci_lo"], e[f"{score}_ci_hi"], e[f"{score}_iqm"]
            ax.barh(y, hi - lo, left=lo, height=0.6, color=colors[agent], alpha=0.55, gid=agent)
            ax.plot([value, value], [y - 0.3, y + 0.3], color="black", lw=2, gid=agent)
            ax.annotate(f"{value:.1f}", (hi, y), xytext=(4, 0), textcoords="offset points", va="center",
                        fontsize="small")
        labels = list(reversed(shown))
        if panel == results.ALL_DATASETS and len({tuple(per_agent[a]) for a in shown}) > 1:
            labels = [f"{a} ({len(per_agent[a])} dataset{'s' if len(per_agent[a]) > 1 else ''})" for a in labels]
        ax.set_yticks(range(len(shown)), labels)
        ax.set_ylim(-0.7, len(shown) - 0.3)
        ax.set_title(panel if panel != results.ALL_DATASETS else "all datasets (each agent's own)"
                     if len({tuple(per_agent[a]) for a in shown}) > 1 else "all datasets")
        ax.set_xlabel(f"IQM of the {score} normalised score")
        ax.grid(axis="x", alpha=0.3)
    # One score axis for every panel, so that bars of different datasets compare by eye.
    ends = [e[f"{score}_ci_{end}"] for e in aggregated for end in ("lo", "hi")]
    pad = 0.08 * (max(ends) - min(ends) or 1.0)
    for ax in axes:
        ax.set_xlim(min(ends) - pad, max(ends) + 1.6 * pad)  # room for the value printed right of a bar
    n_seeds = sorted({len(g) for g in _by_group(rows).values()})
    seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}-{n_seeds[-1]}"
    fig.suptitle(title or f"Interquartile mean (tick) with {CONFIDENCE:.0%} stratified-bootstrap CI (bar), "
                          f"{seeds} seeds per dataset\n({SCORE_AXIS})", fontsize="medium")
    return fig


def profile_figure(rows: list[dict], score: str = "final", title: str | None = None,
                   n_boot: int = N_BOOT) -> Figure:
    """Performance profiles: the fraction of each agent's runs above each score threshold, with 95% bands."""
    table = _scores(rows, score)
    every = np.concatenate([g for agent in table.values() for g in agent.values()])
    lo_tau, hi_tau = min(0.0, every.min()), max(100.0, every.max())
    taus = np.linspace(lo_tau, hi_tau + 0.02 * (hi_tau - lo_tau), 201)
    colors = _colors(table)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    handles, labels = [], []
    for agent, groups in table.items():
        profile, lo, hi = performance_profile(list(groups.values()), taus, n_boot=n_boot)
        (line,) = ax.plot(taus, profile, color=colors[agent], lw=1.8, gid=agent)
        ax.fill_between(taus, lo, hi, color=colors[agent], alpha=0.2, lw=0, gid=agent)
        handles.append(line)
        labels.append(f"{agent} ({len(groups)} dataset{'s' if len(groups) > 1 else ''}, "
                      f"{sum(g.size for g in groups.values())} runs)")
    ax.set_xlabel(f"{score} normalised score threshold τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    _legend_outside(fig, handles, labels)
    fig.suptitle(title or f"Performance profiles (each dataset weighs the same), band = {CONFIDENCE:.0%} "
                          f"stratified-bootstrap CI", fontsize="medium")
    return fig


def poi_figure(rows: list[dict], pairs=None, score: str = "final", title: str | None = None,
               n_boot: int = N_BOOT) -> Figure:
    """Probability of improvement P(X > Y) with its 95% CI for each pair (X, Y): the given pairs, else every
    pair of agents that share a dataset, compared on the datasets they share."""
    table = _scores(rows, score)
    explicit = pairs is not None
    pairs = list(pairs) if explicit else list(itertools.combinations(sorted(table), 2))
    drawn = []
    for x, y in pairs:
        for agent in (x, y):
            if agent not in table:
                raise OfflineRLError(f"no result rows for agent {agent} (the rows have: {', '.join(sorted(table))})")
        if x == y:
            raise OfflineRLError(f"a pair compares two agents, got {x} with itself")
        shared = sorted(set(table[x]) & set(table[y]))
        if not shared:
            if explicit:
                raise OfflineRLError(f"{x} and {y} share no dataset: nothing to compare")
            continue
        p = probability_of_improvement([table[x][d] for d in shared], [table[y][d] for d in shared], n_boot=n_boot)
        drawn.append((x, y, len(shared), p))
    if not drawn:
        raise OfflineRLError("no two agents share a dataset: nothing to compare")
    fig = Figure(figsize=(6.4, 0.5 * len(drawn) + 1.6), layout="constrained")
    ax = fig.subplots()
    colors = _colors(table)
    for i, (x, y, n, (value, lo, hi)) in enumerate(reversed(drawn)):
        ax.barh(i, hi - lo, left=lo, height=0.6, color=colors[x], alpha=0.55, gid=f"{x} > {y}")
        ax.plot([value, value], [i - 0.3, i + 0.3], color="black", lw=2, gid=f"{x} > {y}")
        ax.annotate(f"{value:.2f}", (hi, i), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize="small")
    ax.set_yticks(range(len(drawn)), [f"P({x} > {y}), {n} dataset{'s' if n > 1 else ''}"
                                      for x, y, n, _ in reversed(drawn)])
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlim(0, 1.08)
    ax.set_ylim(-0.7, len(drawn) - 0.3)
    ax.set_xlabel(f"probability that a run of X beats a run of Y ({score} score)")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title or f"Probability of improvement, {CONFIDENCE:.0%} stratified-bootstrap CI",
                 fontsize="medium")
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Writes `fig` to `path` as PNG or SVG (by its suffix); the file appears whole or not at all."""
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in FORMATS:
        raise OfflineRLError(f"plot output {path}: the name must end in {' or '.join(FORMATS)}")
    # SVG keeps its text as text: searchable, editable and smaller than glyph outlines.
    with rc_context({"svg.fonttype": "none"}), atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt[1:], dpi=120, metadata={"Date": None} if fmt == ".svg" else None)
    return path
