"""Exact nearest-neighbour search (Euclidean, k = 1) over a fixed point matrix: PRDC's dataset constraint.

Owns `NearestNeighbours`: built once from the point matrix X [N, D] (float32; for PRDC the rows are
[beta * normalised state, action] of every transition, N = 0.2 M - 2 M, D = 14 - 23, spec §2.3/§2.7), then
`query(keys[..., D])` returns, for every key, the index of its exact nearest row of X (leading dims are free, e.g.
[S, B, D] for S seeds). Two methods, both exact (ties aside), chosen per device (`method="auto"`) or forced:

"brute" (`auto` on CUDA): chunked brute force that stays on the device. X is centred (mean subtracted: the expanded
  form loses precision in proportion to the norms) and cut into `num_chunks` chunks of `chunk_rows` rows, the last one
  zero-padded with +inf norms, all fixed at construction; ||x||^2 is precomputed once. Per chunk the approximate
  distance is ||x||^2 - 2 k.x (||k||^2 is constant per key and left out), one `addmm`; a running top-m (m =
  `candidates`, default 8) is kept across chunks; the m survivors are then RE-RANKED with exact differences
  ((k - x)^2).sum() on the original coordinates, and the arg-min taken (candidates sorted by index first, so an exact
  tie goes to the lowest index). The result equals an exact search unless more than m-1 other points lie within the
  expanded form's rounding error (~D * 2^-24 * (||x||^2 + 2 ||k|| ||x||) in squared distance, after centring) of the
  true nearest distance, i.e. except for (near-)ties. Memory is bounded: the distance block is Q x chunk_rows floats
  and keys are processed in static blocks of max(1, max_chunk_floats // chunk_rows) rows (default 64 M floats: on
  CUDA 2**18-row chunks and blocks of 256 keys, so [S, 256, D] keys cost S x num_chunks matmuls).
  Everything is static-shaped with no host synchronisation (no .item(), no data-dependent shapes), so the query can
  run inside torch.compile / CUDA-graph capture; `torch._dynamo` traces the whole CPU query as one graph with no
  break (see tests). TF32: the chunk matmuls run under a guard that sets `torch.backends.cuda.matmul.allow_tf32 =
  False` and restores it (TF32's 10-bit mantissa would make the top-m miss the true neighbour). Dynamo traces the
  guard as `_set_cublas_allow_tf32` calls inside the graph (no break); whether a compiled/captured graph on CUDA
  honours the guard at replay was NOT checked here (no GPU was available): the safe setting is to leave TF32 off
  globally (PyTorch's default) when training with PRDC.
  Cost: ~2 Q N D FLOPs per call (about 24 GFLOP for Q = 256, N = 2 M, D = 23; around a millisecond on an H100, spec
  §2.7 estimate, not measured here).

"kdtree" (default on CPU): `scipy.spatial.cKDTree` (leafsize 16) built once on a float64 copy of X rotated onto its
  principal axes (centred, times the right singular vectors of up to 200,000 of its rows; keys get the same
  rotation). A rotation changes no distance (in float64 the rotated distances of float32 data differ from the
  original ones by ~1e-16 relative, so only ties closer than that can be broken differently), but the tree's
  axis-aligned splits then follow the directions the data spreads along and prune more. The rotated points are
  also stored in the leaf order of a first tree built on them (scipy scans a leaf through an index array; in the
  data's own order a leaf's points lie all over memory). On the PRDC points of hopper-medium, keyed with a trained
  TD3+BC actor (100k updates), ms per 256 keys went 136 (plain) -> 93-108 (rotated) -> 49-62 (rotated and
  reordered); on halfcheetah-medium (actor at 55k) 33 -> 20-21 -> 11-12; indices identical on all 1,024 keys;
  with zero actions (an untrained actor) rotation alone took 175 -> 119 (hopper) and 167 -> 133 (halfcheetah)
  (one thread, two other jobs on the machine). It is queried with as many scipy workers as torch has threads (`--threads`: a run told to use
  one core uses one; leafsize 8, 32 and 64 were 10-80% slower on hopper-medium with a trained actor's keys). The
  query goes through numpy (a host call; keys are moved to the CPU and the indices back), which is acceptable on
  CPU where nothing is captured; it can be forced on a CUDA matrix too, at the cost of the round trip.
  The tree is fast for keys near the data and, in 20-odd dimensions, slow for keys far from it (below). So a
  call can also go "tree+blocks": the tree is asked only for a neighbour within `near_radius` (a bounded query,
  cheap either way; default 0.75 x the median distance from a point of X to its nearest other point, over 256
  of them), and the keys with none that close go to `BlockScan`, an
  exact scan of the tree-ordered points in blocks of 4,096 rows that skips every block whose bounding box is
  farther than the best point found so far; it starts from the tree's approximate answer (`eps=2`: within 3x the
  nearest distance; 3 ms for 768 keys, and in practice within 1.33x for 90% of them), and screens each block in
  float32, rechecking in float64 only the rows that can be its nearest (see the class).
  Measured on PRDC halfcheetah-medium's keys at alpha = 40 (actors at 1k and 6k updates, 95-96% of their action
  components at the bounds; neighbours 1.75-3.1 away, the points' own spacing 1.38), on an idle 2-core Intel Xeon,
  medians over 4 x 768 keys: the tree alone 1.29-1.36 s on one thread, 0.93-0.96 s with two workers; tree + block
  scan 0.24-0.32 s on one thread, 0.34-0.36 s on two; indices identical on all 6,144 keys. A trained TD3+BC actor's
  keys (neighbours 0.2-0.8 away) take 0.010-0.014 s either way; they would take ~0.6 s had they all gone to the
  scan, hence the radius (its factor 0.25 / 0.5 / 0.75 / 1 gave 0.40 / 0.054 / 0.028 / 0.024 s on those keys and
  0.64 / 0.59 / 0.60 / 0.77 s on the far ones, with an earlier version of the scan). PRDC from its checkpoint at 9.5k updates
  trained at 6.4 updates/s on one thread and 5.9 on two, against 1.3 and 2.4 with the tree alone (150 updates
  each after 10; `offrl bench --from` at 9k: 5.5 and 4.6).
  When nearly every key is far, the bounded query only finds that out, at a fifth of the scan's cost, so a
  third way, "blocks", sends all keys to the scan (from the eps=2 answer) without it: on 768 keys of the PRDC
  halfcheetah actor at 31k updates (94.5% far) 0.21 s against 0.25 for tree+blocks (medians of 4, run paused,
  identical indices), and `offrl bench --from` that checkpoint 6.0-6.3 updates/s against 5.0-5.6 (one thread);
  on a trained TD3+BC actor's keys it costs 0.12 s against 0.014, so it must be chosen per call.
  Which way is faster depends on the data and on where the keys are, so each call takes the way that has been
  faster per key (`FasterOf`: each is tried first, and a slower one again after it has rested 50 x its cost
  ratio calls; the neighbours are the same every way, exact ties aside). Medians of 768 keys ([2 s, a] of the
  generated medium datasets, one thread, beside a training run; tree alone / tree+blocks): hopper (D = 14) with
  actions at the box corners 0.16-0.25 / 0.29-0.36 s, dataset actions + N(0, 0.3^2) 0.019-0.026 / 0.03-0.05 s;
  walker2d (D = 23) 2.7-2.9 / 0.9-1.1 s and 0.11-0.12 / 0.12-0.15 s; so the chooser keeps hopper on the tree and
  sends far keys in 23 dimensions to the scan.
  Along the way: 2,048 / 4,096 / 8,192-row blocks took 0.58 / 0.41 / 0.52 s (that earlier version, one thread);
  the scan runs on one torch thread whatever the run's count, because under offrl's OMP_WAIT_POLICY=PASSIVE
  (set on import) waking a second thread for each small op cost more than it brought (0.50 s vs 0.40 s), and two
  Python threads over halves of the keys were slower still (again at 31k updates: 0.26-0.54 s against 0.20-0.29).
  Processes are not held back by the GIL: with workers > 1 (a run's --threads), the far keys are shared with
  workers - 1 forked processes (offrl/scan_workers.py). 768 keys of the actor at 31k, block scan alone: 0.13-0.14
  s with one worker against 0.18-0.19 on one process (medians of 8, idle 2 cores, identical indices); PRDC from
  its checkpoint at 52k: 10.3-11.2 updates/s on two threads against 6.0 on one.
  Box bounds as |k - clamp(k, lo, hi)|^2 (3 passes instead of 5) and one float32 slack per key (from the largest
  |x| of all points rather than per block) took the scan of 726 far keys from 0.22 / 0.25 s to 0.19 / 0.22 (keys
  at 31k / 5k updates, medians of 4, identical indices). Bounding boxes are the bound that prunes: a ball bound
  (centroid distance minus radius) would leave 3.6x as many rows per key, and smaller blocks, though they leave
  fewer (4,096 / 1,024 / 512 rows: 139k / 75k / 56k of the 1M per key), cost more in per-block overhead.

Why kdtree on CPU -- measured here (2 shared AMD EPYC cores, load average 2-3.5 from other users, so +-50%; torch
2.13 CPU, 2 threads; N = 1,000,000, B = 256 keys, ms per 256-key batch, mean of 3 after a warm-up call;
ranges = two runs at different load):

  data / keys                                   D = 14: kdtree  brute      D = 23: kdtree  brute
  random N(0, I), keys = data + 0.05 sd noise              3.3   1100                4.6   1080
  trajectories (random walks), keys = data + 0.05 sd       6.3   1100                8.6   1070
  PRDC-like [2 s, a]: state exact, action + N(0, 0.1^2)    2.5     --               15.2     --
  PRDC-like, action + N(0, 0.3^2)                         15.9     --               53.2     --
  PRDC-like, action + N(0, 1), clipped to [-1, 1]          146     --                787     --
  random, keys = data + 0.3 sd noise in every dim      314-777    1150          934-1690  975-2050
  random, keys = data + 1 sd noise in every dim           2800     --              23700     --
  trajectories, keys = data + 1 sd noise in every dim     3400     --              19100     --

  (brute does not depend on the data: ~1.1 s per batch at N = 1 M with 2 threads, 32 768-row chunks; it is memory-
  bound on the Q x chunk distance block and its top-m, so D = 14 and 23 cost the same; "--" = not run.) The KD-tree
  build takes 0.6-2.3 s at N = 1 M. The KD-tree wins by two to three orders of magnitude whenever the keys lie close
  to the data -- PRDC's keys do: their state part is a dataset state, only the action part moves -- and loses only
  when every coordinate of a key is ~0.3 sd (break-even at D = 23) or more away from the data. So `auto` picks
  "kdtree" on CPU for every D (both measured dimensions agree), "brute" on CUDA. Indices agreed between the two
  methods on every benchmark key (no duplicate rows there; with duplicates they may pick different tied rows).
  PRDC-like data: states = standardised random walks (|S| = 11 / 17) times beta = 2, actions = tanh of random walks
  (|A| = 3 / 6); keys = a dataset row with its action part perturbed. Episodes of 1000 steps in all walk data.

Where the KD-tree is slow, and what did not beat it (measured on CPU, 1 thread, the campaign's two runs beside it):
PRDC on halfcheetah-medium (alpha = 40) drives its actor to the action bounds (90% of the action components of the
actor at 12k updates are saturated), so its keys sit ~2.4 (median) from the nearest point and the tree takes 2.1-3.3 s
per 768 keys (3 seeds x 256): PRDC then runs at 0.5-1.2 updates/s. Four exact alternatives were tried on those keys
(checkpoint at 13k updates; all returned the tree's indices):
  - a tighter search bound. The key's own dataset row ([beta * s, a] of the batch) is within 1.0017x of the nearest
    distance for 90% of keys (the nearest point IS the own row for over half of them), but passing it to the tree as
    `distance_upper_bound` changed nothing (3.30 vs 3.28 s), nor did a ball query of radius |pi(s) - a| / beta on a
    tree of the 17 states (3.4 s; 520 candidates at the median, 7,000 at q90, 42,000 at most): the tree finds a good
    candidate fast anyway, and proving no closer point exists is the cost.
  - k-means clusters (C = 1,000 - 4,000, Lloyd on a sample) searched by brute force, skipping a cluster whose
    centre is farther than its radius plus that bound: 1.2-1.4 s per 768 keys at C = 1,000 with the own-row bound (a
    1.9x gain at best), 8 s without it, and 0.75 s where the tree takes 0.01-0.17 s (keys near the data); C = 2,000
    and 4,000 were slower (2.0 and 4.0 s), and the build costs 12-55 s. In 23 dimensions the clusters' radii (median
    4.3) exceed the nearest distance, so ~140 of 1,000 clusters (14% of the points) survive the pruning. Not kept: under
    2x on the one slow case, and slower than the tree on every other.
  - a state ball query with a radius tightened by the action part: a point closer than the own row must have
    beta^2 |ds|^2 <= d0^2 - m^2, m = the distance from pi(s) to the nearest dataset ACTION (a 6-D tree). At 24k updates
    the radius fell from 2.0 to 1.6 (median) and the median ball held 5 points, but the 6-D search alone took
    4.1-4.6 s per 768 keys (keys at the action bounds are its worst case too) and the whole query 8.0-9.1 s, vs the
    tree's 6.5-7.5 s (four processes on the 2 cores). Not kept.
  - brute force tuned for the CPU cache (checkpoint at 48k updates, 3,072 keys, one thread beside the run): the tree
    took 1.37-1.69 s per 768 keys. A running arg-min over the expanded form, in blocks of 64-768 keys x 2,048-32,768
    rows (no top-m and no re-rank, so a lower bound on an exact brute force's cost), took 2.4-5.3 s per 768 keys in
    float32 and 3.0-8.4 s in float64 (its arg-min agreed with the tree on all 768). Leafsize 48 cost the same as 16
    (1.09 s per 768 keys, rotated and reordered) and 128 was 1.4x slower.
  - (a later session, an Intel Xeon) faiss's exact IndexFlatL2 took 17.8 s per 768 keys, sklearn's BallTree 27 s,
    pykdtree 6.3-7.1 s, against the tree's 2.2-2.6 s (one thread, two runs beside it). What did beat it: bounding
    boxes of blocks of the tree's points. With 64-point blocks, the boxes of a median 258 blocks (21,000 points) lie
    within a key's own-row distance, so certifying a neighbour needs ~21,000 distances, while the tree spends
    ~3 ms a key; computing all box bounds at once and scanning the surviving blocks with one matmul per block (keys
    that need it batched) took 0.6-0.8 s with 2,048-row blocks: BlockScan (4,096 rows now, measured above). Smaller
    blocks scan fewer points but cost more in bounds and Python (1,024 rows: 0.75-0.81 s).

Keys are cast to float32 (the precision of X) before either search.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
from scipy.spatial import cKDTree

METHODS = ("auto", "kdtree", "brute")


def principal_axes(x: np.ndarray, max_rows: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], orthogonal [D, D] whose columns are the principal axes of x [N, D], from at most `max_rows`
    evenly spaced rows). Rotating points and keys by it leaves every Euclidean distance as it was."""
    centre = x.mean(axis=0)
    sample = x[::max(1, len(x) // max_rows)] - centre
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    if vt.shape[0] < x.shape[1]:  # fewer rows than dimensions: keep the identity
        return centre, np.eye(x.shape[1])
    return centre, vt.T


def spacing(tree: cKDTree, sample: int = 256) -> float:
    """The median distance from a point of the tree to its nearest other point (over an even sample of at most
    `sample` points); inf for a single point."""
    if tree.n < 2:
        return math.inf
    dist, _ = tree.query(tree.data[::max(1, tree.n // sample)], k=2)
    return float(np.median(dist[:, 1]))


class BlockScan:
    """Exact nearest neighbours by scanning points [N, D] (float64, in an order where neighbours sit together: a
    KD-tree's leaf order) in blocks of `block_rows` consecutive rows, skipping every block whose bounding box lies
    farther from the key than the nearest point found so far.

    `nearest(keys, start)` begins from one candidate row per key (`start`: the tree's approximate answer, whose
    exact distance bounds the nearest one from above), takes the squared distance from every key to every block's
    box (a lower bound on its distance to any point of the block) and scans, block by block, every block whose
    bound is below a key's best so far, for all the keys that need it at once. A scan screens the block in float32
    (one matmul, ||x||^2 - 2 k.x + ||k||^2, and its row minimum) and rechecks with exact float64 differences only the
    rows within the float32 rounding bound of that minimum, for the keys it can still help. Exact: a tie goes to the
    lower id. Cost: one small matmul per (block, keys that need it); the tree answers keys near the data faster, so
    NearestNeighbours sends only the far ones here."""

    def __init__(self, points: np.ndarray, block_rows: int = 4096, ids: np.ndarray | None = None):
        n, d = points.shape
        # what `nearest` returns for each row (default: the row itself); an exact tie goes to the lower id
        self.ids = torch.arange(n) if ids is None else torch.as_tensor(np.asarray(ids, np.int64))
        self.rows = max(1, min(int(block_rows), n))
        self.num_blocks = math.ceil(n / self.rows)
        pts = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float64))
        self.lo = torch.stack([b.min(0).values for b in pts.split(self.rows)])  # [blocks, D] bounding boxes
        self.hi = torch.stack([b.max(0).values for b in pts.split(self.rows)])
        self.radius = float(pts.square().sum(1).max().sqrt())  # the largest |x|: bounds float32's rounding
        pad = self.num_blocks * self.rows - n
        norms = (pts * pts).sum(1)
        if pad:  # padded rows: at the origin with an infinite norm, so they are never the nearest
            pts = torch.cat([pts, pts.new_zeros(pad, d)])
            norms = torch.cat([norms, norms.new_full((pad,), math.inf)])
        self.points = pts  # [blocks * rows, D], float64: the exact rechecks
        self.block_ids = torch.cat([self.ids, self.ids.new_full((pad,), n)]).view(self.num_blocks, self.rows)
        self.blocks32 = pts.float().view(self.num_blocks, self.rows, d)  # the screens
        self.norms32 = norms.float().view(self.num_blocks, self.rows)

    def _bounds(self, keys: torch.Tensor) -> torch.Tensor:
        """[Q, blocks]: squared distance from each key to each block's box (in key chunks: the [chunk, blocks, D]
        temporary stays small)."""
        out = keys.new_empty(len(keys), self.num_blocks)
        step = max(1, 2 ** 21 // (self.num_blocks * keys.shape[1]))
        for s in range(0, len(keys), step):
            k = keys[s:s + step, None]
            # the key minus its nearest point of the box (exact in float64: k - lo, k - hi or 0 per coordinate)
            out[s:s + step] = (k - torch.maximum(torch.minimum(k, self.hi), self.lo)).square_().sum(-1)
        return out

    def _offer(self, who, rows, keys, best, arg) -> None:
        """Offer rows (positions in self.points) as candidates to keys `who` (pairs, a key may come several times):
        a key takes the nearest by exact float64 distance, and of equally near ones the lowest id."""
        exact = (self.points[rows] - keys[who]).square().sum(-1)
        ids = self.block_ids.view(-1)[rows]
        least = best.scatter_reduce(0, who, exact, "amin")  # the nearer of the best so far and the offers
        tied = exact == least[who]  # the offers as near as that (none where the best so far is nearer)
        lowest = arg.scatter_reduce(0, who[tied], ids[tied], "amin", include_self=False)  # others keep arg
        # a nearer offer replaces the best; an equally near one wins if its id is lower
        arg.copy_(torch.where(least < best, lowest, torch.minimum(arg, lowest)))
        best.copy_(least)

    def _scan(self, block: int, who: torch.Tensor, keys, keys32, key_norms, slack, best, arg) -> None:
        """Update best / arg of the keys `who` with block `block`."""
        kn, slack = key_norms[who], slack[who]
        approx = torch.addmm(self.norms32[block], keys32[who], self.blocks32[block].T, alpha=-2.0)
        low = approx.amin(1)
        helps = low + kn - slack <= best[who]  # else even the nearest row of the block is farther than the best
        if not helps.any():
            return
        # the rows that can be the block's nearest: within twice the slack of the screened minimum
        near = approx[helps] <= (low[helps] + 2 * slack[helps])[:, None]
        pair, row = near.nonzero(as_tuple=True)
        self._offer(who[helps][pair], block * self.rows + row, keys, best, arg)

    def nearest(self, keys: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """keys [Q, D] float64 (in the points' coordinates), start [Q] a candidate row (position) for each ->
        LongTensor [Q]: the id of each key's nearest row. Runs on one torch thread: its ops are small, and with
        offrl's OMP_WAIT_POLICY=PASSIVE waking a second thread for each costs more than it brings (768 far keys:
        0.50 s on two threads, 0.40 s on one)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._nearest(keys, start)
        finally:
            torch.set_num_threads(threads)

    def _nearest(self, keys: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        keys32, key_norms = keys.float(), (keys * keys).sum(1)
        # float32 rounding of ||x||^2 - 2 k.x + ||k||^2 against the exact squared distance: a generous bound (D + 4
        # roundings of 2^-24 relative on terms of at most (|x| + |k|)^2, times 4)
        slack = 4 * (keys.shape[1] + 4) * 2.0 ** -24 * (self.radius + key_norms.sqrt()) ** 2
        best = (self.points[start] - keys).square().sum(-1)
        arg = self.block_ids.view(-1)[start].clone()
        # [blocks, Q] (a block's keys are a contiguous row)
        bounds = self._bounds(keys).T.contiguous()
        # A block can hold a point as near as the best only if its box is (the bound is exact up to rounding:
        # shrunk by a relative 1e-9 so that rounding never skips a block that holds the nearest).
        bounds *= 1 - 1e-9
        todo = bounds <= best
        for block in torch.nonzero(todo.any(1)).flatten().tolist():
            who = torch.nonzero(todo[block]).flatten()
            who = who[bounds[block, who] <= best[who]]  # the best may have improved meanwhile
            if len(who):
                self._scan(block, who, keys, keys32, key_norms, slack, best, arg)
        return arg


class FasterOf:
    """Picks, call after call, whichever of several equivalent ways of doing a job has been cheaper per item.

    Each way is tried once first; then the cheapest so far (seconds per item: an exponential moving average for
    the way in use, the latest measurement for the others) is used, and another way is tried again once it has
    rested `probe_every` x (its cost / the best cost) calls, so that the choice follows a workload that drifts
    (PRDC's keys move with its actor) while the probes cost about 1 / probe_every of the time. For work whose
    result does not depend on the way chosen."""

    def __init__(self, ways: tuple[str, ...], probe_every: int = 50, smoothing: float = 0.3):
        self.ways, self.probe_every, self.smoothing = ways, probe_every, smoothing
        self.cost: dict[str, float] = {}
        self.tried: dict[str, int] = {}  # the call at which each way last ran
        self.calls = 0
        self._probing = False

    def pick(self) -> str:
        self.calls += 1
        untried = [w for w in self.ways if w not in self.cost]
        way = untried[0] if untried else min(self.ways, key=self.cost.__getitem__)
        self._probing = False
        if not untried:
            best = self.cost[way]
            for other in self.ways:
                rest = self.probe_every * self.cost[other] / max(best, 1e-12)
                if other != way and self.calls - self.tried[other] >= rest:
                    way, self._probing = other, True
                    break
        self.tried[way] = self.calls
        return way

    def record(self, way: str, seconds: float, items: int) -> None:
        per_item = seconds / max(1, items)
        old = self.cost.get(way)
        # a probe's measurement replaces what may be a stale figure; the way in use is smoothed over calls
        self.cost[way] = per_item if old is None or self._probing else old + self.smoothing * (per_item - old)


class NearestNeighbours:
    """Index of the exact Euclidean nearest row of `points` [N, D] for every key [..., D] (see the module docstring).

    method: "auto" (brute on CUDA, kdtree on CPU), "kdtree" or "brute". Brute-force options: `candidates` (m, the
    survivors re-ranked exactly), `chunk_rows` (rows of X per matmul; default 2**18 on CUDA, 2**15 on CPU),
    `max_chunk_floats` (bound on one distance block, keys are split into static blocks to respect it).
    kdtree options: `workers` (scipy threads, and processes sharing a block scan's keys: offrl/scan_workers.py;
    None = torch's thread count at query time, -1 = all cores for scipy);
    `near_radius` (None: 0.75 x the points' median spacing, and each call goes to the tree alone, to the tree
    with the block scan for the keys it has no point within that radius for, or to the block scan alone,
    whichever has been faster; a number: always the second with that radius, so 0 sends every key to the block
    scan and inf every key to the tree);
    `block_rows` (the block scan's block size).
    """

    def __init__(self, points: torch.Tensor, method: str = "auto", *, candidates: int = 8,
                 chunk_rows: int | None = None, max_chunk_floats: int = 64 * 2 ** 20, workers: int | None = None,
                 near_radius: float | None = None, block_rows: int = 4096):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if points.dim() != 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [N, D] matrix, got shape {tuple(points.shape)}")
        self.points = points.detach().to(torch.float32).contiguous()
        self.device = self.points.device
        self.num_points, self.dim = self.points.shape
        if method == "auto":
            method = "brute" if self.device.type == "cuda" else "kdtree"
        self.method = method
        self.workers = workers
        if method == "kdtree":
            x = self.points.cpu().numpy().astype(np.float64)
            self._centre, self._rotation = principal_axes(x)
            rotated = (x - self._centre) @ self._rotation
            # Stored in a first tree's leaf order, so that a leaf's points are near each other in memory.
            self._order = cKDTree(rotated, leafsize=16).indices
            self._tree = cKDTree(rotated[self._order], leafsize=16)
            self._blocks = BlockScan(self._tree.data, block_rows, ids=self._order)
            self._scan_workers = None
            self.near_radius = 0.75 * spacing(self._tree) if near_radius is None else float(near_radius)
            self._chooser = FasterOf(("tree", "tree+blocks", "blocks")) if near_radius is None else None
        else:
            self._build_brute(candidates, chunk_rows, max_chunk_floats)

    # ---------------------------------------------------------------- brute force
    def _build_brute(self, candidates: int, chunk_rows: int | None, max_chunk_floats: int) -> None:
        n = self.num_points
        self.candidates = max(1, min(candidates, n))
        if chunk_rows is None:
            chunk_rows = 2 ** 18 if self.device.type == "cuda" else 2 ** 15
        self.chunk_rows = max(self.candidates, min(chunk_rows, n))
        self.num_chunks = math.ceil(n / self.chunk_rows)
        self.query_block = max(1, max_chunk_floats // self.chunk_rows)
        pad = self.num_chunks * self.chunk_rows - n
        self._mean = self.points.mean(dim=0)
        centred = self.points - self._mean
        norms = (centred * centred).sum(dim=1)
        if pad:  # padded rows: zero coordinates, +inf norm, so they never enter the top-m of a real key
            centred = torch.cat([centred, centred.new_zeros(pad, self.dim)])
            norms = torch.cat([norms, norms.new_full((pad,), math.inf)])
        self._chunks = centred.view(self.num_chunks, self.chunk_rows, self.dim)
        self._norms = norms.view(self.num_chunks, self.chunk_rows)

    def _brute_block(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [Q, D] float32 on self.device -> indices [Q]."""
        m, rows = self.candidates, self.chunk_rows
        centred = keys - self._mean
        best_d = best_i = None
        for c in range(self.num_chunks):
            # approximate squared distance minus ||k||^2:  ||x||^2 - 2 k.x, one matmul in full FP32
            d = torch.addmm(self._norms[c], centred, self._chunks[c].T, alpha=-2.0)
            v, i = d.topk(m, dim=1, largest=False, sorted=False)
            if c == 0:
                best_d, best_i = v, i
            else:  # running top-m across chunks
                v = torch.cat([best_d, v], dim=1)
                i = torch.cat([best_i, i + c * rows], dim=1)
                best_d, j = v.topk(m, dim=1, largest=False, sorted=False)
                best_i = i.gather(1, j)
        # Exact re-rank of the m survivors (clamp only guards the gather; padded rows never survive).
        idx, _ = best_i.clamp(max=self.num_points - 1).sort(dim=1)
        exact = (keys.unsqueeze(1) - self.points[idx]).square().sum(dim=-1)
        return idx.gather(1, exact.argmin(dim=1, keepdim=True)).squeeze(1)

    def _query_brute(self, keys: torch.Tensor) -> torch.Tensor:
        cuda = self.device.type == "cuda"
        if cuda:  # TF32 off for the distance matmuls (restored afterwards); see the module docstring
            previous = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
        try:
            b = self.query_block
            if keys.shape[0] <= b:
                return self._brute_block(keys)
            return torch.cat([self._brute_block(keys[s:s + b]) for s in range(0, keys.shape[0], b)])
        finally:
            if cuda:
                torch.backends.cuda.matmul.allow_tf32 = previous

    # ---------------------------------------------------------------- kd-tree
    def _tree_and_blocks(self, keys64: np.ndarray, workers: int, near_radius: float) -> np.ndarray:
        """The tree answers the keys with a point within near_radius (a bounded query is cheap); the others are
        scanned block by block (see BlockScan). near_radius 0 sends every key to the scan without asking the tree
        (a bounded query of keys that are all far costs a fifth of the scan). Ids [Q] of the points in their
        original order."""
        if near_radius > 0:
            dist, idx = self._tree.query(keys64, k=1, workers=workers, distance_upper_bound=near_radius)
            far = ~np.isfinite(dist)
            idx = self._order[np.where(far, 0, idx)].astype(np.int64)
        else:
            far, idx = np.ones(len(keys64), bool), np.zeros(len(keys64), np.int64)
        if far.any():
            # an approximate answer (within 3x the nearest distance, and cheap) is where the scan starts from
            _, start = self._tree.query(keys64[far], k=1, eps=2.0, workers=workers)
            idx[far] = self._scan(workers).nearest(torch.from_numpy(keys64[far]), torch.from_numpy(start)).numpy()
        return idx

    def _scan(self, workers: int):
        """The block scan, shared with workers - 1 worker processes when the query may use several threads
        (offrl/scan_workers.py; started at the first scan, they take over once they are up)."""
        if workers <= 1:
            return self._blocks
        if self._scan_workers is None:
            from offrl.scan_workers import ScanWorkers
            self._scan_workers = ScanWorkers(self._blocks, workers - 1)
        return self._scan_workers

    # ---------------------------------------------------------------- public
    @torch.no_grad()
    def query(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [..., D] -> LongTensor [...] of row indices into `points`, on the keys' device."""
        if keys.shape[-1] != self.dim:
            raise ValueError(f"keys must end in dimension {self.dim}, got shape {tuple(keys.shape)}")
        lead = keys.shape[:-1]
        flat = keys.detach().reshape(-1, self.dim).to(torch.float32)
        if self.method == "kdtree":  # host call through numpy
            workers = torch.get_num_threads() if self.workers is None else self.workers
            keys64 = (flat.cpu().numpy().astype(np.float64) - self._centre) @ self._rotation
            way = self._chooser.pick() if self._chooser is not None else "tree+blocks"
            started = time.perf_counter()
            if way == "tree":
                idx = self._order[self._tree.query(keys64, k=1, workers=workers)[1]].astype(np.int64)
            else:
                idx = self._tree_and_blocks(keys64, workers, self.near_radius if way == "tree+blocks" else 0.0)
            if self._chooser is not None:
                self._chooser.record(way, time.perf_counter() - started, len(keys64))
            return torch.from_numpy(idx).to(keys.device).reshape(lead)
        return self._query_brute(flat.to(self.device)).to(keys.device).reshape(lead)
