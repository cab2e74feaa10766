"""Exact nearest-neighbour search (Euclidean, k = 1) over a fixed point matrix: PRDC's dataset constraint.

`NearestNeighbours(points [N, D])` is built once; `query(keys [..., D])` returns, for every key, the index of its
exact nearest row of points (leading dims are free, e.g. [S, B, D] for S seeds). PRDC's points are the dataset's
~1M rows [beta * normalised state, action] (D = 14-23), and its keys put the actor's action beside a dataset state.
Two exact methods, picked by device (`method="auto"`) or forced:

"kdtree" (CPU): scipy's cKDTree, built on the points rotated onto their principal axes (no distance changes, but
  the axis-aligned splits then follow the directions the data spreads along) and stored in a first tree's leaf
  order (a leaf's points sit together in memory). A tree is fast for keys near the data and, in 20-odd dimensions,
  slow for keys far from it, which an actor at its action bounds produces. So a cheap approximate query
  first sorts the keys: those with a point within `near_radius` go to the tree, the others to `BlockScan`, an
  exact scan of the tree-ordered points that skips every block whose bounding box is farther than the best
  point found so far (while nearly every key of a call was near, the next call skips the sorting). The query
  is a host call through numpy: keys go to the CPU, indices come back.
"brute" (CUDA): chunked brute force that stays on the device, with static shapes and no host synchronisation,
  so it can be compiled or captured. Squared distances in the expanded form ||x||^2 - 2 k.x on centred points in
  full float32 (TF32 is switched off around the matmuls: its 10-bit mantissa would lose the true neighbour), a
  running top-m over chunks, then an exact re-rank of the m survivors. Exact except for near-ties within float32
  rounding of the expanded form.

Keys are cast to float32, the precision of the points. An exact tie goes to the lowest index in the block scan
and the brute force; the tree may return either row. docs/performance.md records the measurements behind these
choices and what else was tried.
"""
from __future__ import annotations

import math

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

    `nearest(keys, start)` begins from one candidate row per key (`start`, whose exact distance bounds the nearest
    one from above), takes the squared distance from every key to every block's box (a lower bound on its distance
    to any point of the block) and scans, block by block, every block whose bound is below a key's best so far,
    for all the keys that need it at once. A scan screens the block in float32 (one matmul and its row minimum)
    and rechecks with exact float64 differences only the rows within float32's rounding bound of that minimum.
    A tie goes to the lower id."""

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
        offrl's OMP_WAIT_POLICY=PASSIVE waking a second thread for each costs more than it brings."""
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


class TreeSearch:
    """The "kdtree" method: a rotated, leaf-ordered cKDTree for the keys whose approximate neighbour lies within
    `near_radius`, the block scan for the others. near_radius None: 1.5 x the points' median spacing; 0 sends
    every key to the scan, inf every key to the tree. `workers`: scipy's threads (None: torch's thread count at
    query time). Either way the answer is exact; the sorting only decides what it costs."""

    def __init__(self, points: np.ndarray, near_radius: float | None, block_rows: int, workers: int | None):
        x = points.astype(np.float64)
        self.centre, self.rotation = principal_axes(x)
        rotated = (x - self.centre) @ self.rotation
        self.order = cKDTree(rotated, leafsize=16).indices  # a first tree's leaf order
        self.tree = cKDTree(rotated[self.order], leafsize=16)
        self.scan = BlockScan(self.tree.data, block_rows, ids=self.order)
        self.near_radius = 1.5 * spacing(self.tree) if near_radius is None else float(near_radius)
        self.workers = workers
        # PRDC's keys move slowly with its actor: while at least 90% of a call's keys were near, the next call
        # goes to the tree without sorting them first; one that finds far keys sorts the next call's again
        self.keys_were_near, self.near_share = False, 0.9

    def query(self, keys: np.ndarray) -> np.ndarray:
        """keys [Q, D] -> ids [Q] (int64) of the nearest points in their original order."""
        keys = (keys.astype(np.float64) - self.centre) @ self.rotation
        workers = torch.get_num_threads() if self.workers is None else self.workers
        if self.keys_were_near:  # the sorting query would cost a tenth of the tree's answer for nothing
            dist, idx = self.tree.query(keys, k=1, workers=workers)
            self.keys_were_near = np.mean(dist <= self.near_radius) >= self.near_share
            return self.order[idx]
        # An approximate answer first (within 3x the nearest distance, usually the nearest itself; cheap near the
        # data and far from it): it says which keys the tree answers fast, and is where the scan starts from.
        approx, start = self.tree.query(keys, k=1, eps=2.0, workers=workers)
        near = approx <= self.near_radius
        self.keys_were_near = near.mean() >= self.near_share
        idx = np.empty(len(keys), np.int64)
        if near.any():
            idx[near] = self.order[self.tree.query(keys[near], k=1, workers=workers)[1]]
        if not near.all():
            idx[~near] = self.scan.nearest(torch.from_numpy(keys[~near]), torch.from_numpy(start[~near])).numpy()
        return idx


class BruteForce:
    """The "brute" method: points centred and cut into `num_chunks` chunks of `chunk_rows` rows (the last one
    zero-padded with +inf norms), keys in static blocks of max(1, max_chunk_floats // chunk_rows) rows so that one
    distance block stays under max_chunk_floats floats; the `candidates` nearest by the expanded form are
    re-ranked with exact differences (sorted by index first, so an exact tie goes to the lowest)."""

    def __init__(self, points: torch.Tensor, candidates: int, chunk_rows: int | None, max_chunk_floats: int):
        self.points, (n, d) = points, points.shape
        self.cuda = points.device.type == "cuda"
        self.candidates = max(1, min(candidates, n))
        if chunk_rows is None:
            chunk_rows = 2 ** 18 if self.cuda else 2 ** 15
        self.chunk_rows = max(self.candidates, min(chunk_rows, n))
        self.num_chunks = math.ceil(n / self.chunk_rows)
        self.query_block = max(1, max_chunk_floats // self.chunk_rows)
        pad = self.num_chunks * self.chunk_rows - n
        # centred: the expanded form loses precision in proportion to the norms
        self.mean = points.mean(dim=0)
        centred = points - self.mean
        norms = (centred * centred).sum(dim=1)
        if pad:  # padded rows: zero coordinates, +inf norm, so they never enter the top-m of a real key
            centred = torch.cat([centred, centred.new_zeros(pad, d)])
            norms = torch.cat([norms, norms.new_full((pad,), math.inf)])
        self.chunks = centred.view(self.num_chunks, self.chunk_rows, d)
        self.norms = norms.view(self.num_chunks, self.chunk_rows)

    def _block(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [Q, D] float32 on the points' device -> indices [Q]."""
        m, rows = self.candidates, self.chunk_rows
        centred = keys - self.mean
        best_d = best_i = None
        for c in range(self.num_chunks):
            # approximate squared distance minus ||k||^2 (constant per key): ||x||^2 - 2 k.x, one matmul
            d = torch.addmm(self.norms[c], centred, self.chunks[c].T, alpha=-2.0)
            v, i = d.topk(m, dim=1, largest=False, sorted=False)
            if c == 0:
                best_d, best_i = v, i
            else:  # running top-m across chunks
                v = torch.cat([best_d, v], dim=1)
                i = torch.cat([best_i, i + c * rows], dim=1)
                best_d, j = v.topk(m, dim=1, largest=False, sorted=False)
                best_i = i.gather(1, j)
        # Exact re-rank of the m survivors (clamp only guards the gather; padded rows never survive).
        idx, _ = best_i.clamp(max=len(self.points) - 1).sort(dim=1)
        exact = (keys.unsqueeze(1) - self.points[idx]).square().sum(dim=-1)
        return idx.gather(1, exact.argmin(dim=1, keepdim=True)).squeeze(1)

    def query(self, keys: torch.Tensor) -> torch.Tensor:
        if self.cuda:  # TF32 off for the distance matmuls, restored afterwards
            previous = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
        try:
            b = self.query_block
            if keys.shape[0] <= b:
                return self._block(keys)
            return torch.cat([self._block(keys[s:s + b]) for s in range(0, keys.shape[0], b)])
        finally:
            if self.cuda:
                torch.backends.cuda.matmul.allow_tf32 = previous


class NearestNeighbours:
    """Index of the exact Euclidean nearest row of `points` [N, D] for every key [..., D] (see the module docstring).

    method: "auto" (brute on CUDA, kdtree on CPU), "kdtree" or "brute". kdtree options: `near_radius`,
    `block_rows` (the block scan's block size), `workers` (see TreeSearch). brute options: `candidates` (m, the
    survivors re-ranked exactly), `chunk_rows` (default 2**18 on CUDA, 2**15 on CPU), `max_chunk_floats`."""

    def __init__(self, points: torch.Tensor, method: str = "auto", *, candidates: int = 8,
                 chunk_rows: int | None = None, max_chunk_floats: int = 64 * 2 ** 20, workers: int | None = None,
                 near_radius: float | None = None, block_rows: int = 4096):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if points.dim() != 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [N, D] matrix, got shape {tuple(points.shape)}")
        points = points.detach().to(torch.float32).contiguous()
        self.device, self.dim = points.device, points.shape[1]
        if method == "auto":
            method = "brute" if self.device.type == "cuda" else "kdtree"
        self.method = method
        if method == "kdtree":
            self._search = TreeSearch(points.cpu().numpy(), near_radius, block_rows, workers)
        else:
            self._search = BruteForce(points, candidates, chunk_rows, max_chunk_floats)

    @torch.no_grad()
    def query(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [..., D] -> LongTensor [...] of row indices into `points`, on the keys' device."""
        if keys.shape[-1] != self.dim:
            raise ValueError(f"keys must end in dimension {self.dim}, got shape {tuple(keys.shape)}")
        flat = keys.detach().reshape(-1, self.dim).to(torch.float32)
        if self.method == "kdtree":  # a host call through numpy
            idx = torch.from_numpy(self._search.query(flat.cpu().numpy()))
        else:
            idx = self._search.query(flat.to(self.device))
        return idx.to(keys.device).reshape(keys.shape[:-1])
