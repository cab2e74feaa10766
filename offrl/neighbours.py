"""Exact nearest-neighbour search (Euclidean, k = 1) over a fixed point matrix: PRDC's dataset constraint.

DRAFT: timings filled in below after measurement.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
from scipy.spatial import cKDTree

METHODS = ("auto", "kdtree", "brute")


@contextlib.contextmanager
def _no_tf32(device: torch.device):
    """Full-FP32 (IEEE) matmuls on CUDA for the duration of the block; a no-op elsewhere."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


class NearestNeighbours:
    """Index of the exact Euclidean nearest point among `points` [N, D] for every key [..., D]."""

    def __init__(self, points: torch.Tensor, method: str = "auto", *, candidates: int = 8,
                 chunk_rows: int | None = None, max_chunk_floats: int = 64 * 2 ** 20, workers: int = -1):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if points.dim() != 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty [N, D] matrix, got shape {tuple(points.shape)}")
        self.points = points.detach().to(torch.float32).contiguous()
        self.device = self.points.device
        self.num_points, self.dim = self.points.shape
        if method == "auto":
            method = self._auto_method()
        self.method = method
        self.workers = workers
        if method == "kdtree":
            self._tree = cKDTree(self.points.cpu().numpy().astype(np.float64), leafsize=16)
        else:
            self._build_brute(candidates, chunk_rows, max_chunk_floats)

    def _auto_method(self) -> str:
        if self.device.type == "cuda":
            return "brute"
        return "kdtree"

    # ---------------------------------------------------------------- brute force
    def _build_brute(self, candidates: int, chunk_rows: int | None, max_chunk_floats: int) -> None:
        n = self.num_points
        self.candidates = max(1, min(candidates, n))
        if chunk_rows is None:
            chunk_rows = 2 ** 18 if self.device.type == "cuda" else 2 ** 15
        chunk_rows = max(self.candidates, min(chunk_rows, n))
        self.num_chunks = math.ceil(n / chunk_rows)
        self.chunk_rows = chunk_rows
        self.max_chunk_floats = max_chunk_floats
        pad = self.num_chunks * chunk_rows - n
        # Centre the data: the expanded form loses precision in proportion to ||x||^2 + ||k|| ||x||.
        self._mean = self.points.mean(dim=0)
        centred = self.points - self._mean
        norms = (centred * centred).sum(dim=1)
        if pad:
            centred = torch.cat([centred, centred.new_zeros(pad, self.dim)])
            norms = torch.cat([norms, norms.new_full((pad,), math.inf)])
        self._chunks = centred.view(self.num_chunks, chunk_rows, self.dim)
        self._norms = norms.view(self.num_chunks, chunk_rows)

    def _brute_block(self, keys: torch.Tensor) -> torch.Tensor:
        m, rows = self.candidates, self.chunk_rows
        centred = keys - self._mean
        best_d = best_i = None
        for c in range(self.num_chunks):
            with _no_tf32(self.device):
                # ||x||^2 - 2 k.x  (||k||^2 is the same for every x of a key and is left out)
                d = torch.addmm(self._norms[c], centred, self._chunks[c].T, alpha=-2.0)
            v, i = d.topk(m, dim=1, largest=False, sorted=False)
            if c:
                i = i + c * rows
                v = torch.cat([best_d, v], dim=1)
                i = torch.cat([best_i, i], dim=1)
                v, j = v.topk(m, dim=1, largest=False, sorted=False)
                i = i.gather(1, j)
            best_d, best_i = v, i
        # Re-rank the m candidates with exact differences; sort by index first so that exact ties go to the lowest.
        idx, _ = best_i.clamp_(max=self.num_points - 1).sort(dim=1)
        exact = (keys.unsqueeze(1) - self.points[idx]).square().sum(dim=-1)
        return idx.gather(1, exact.argmin(dim=1, keepdim=True)).squeeze(1)

    def _query_brute(self, keys: torch.Tensor) -> torch.Tensor:
        q = keys.shape[0]
        block = max(1, self.max_chunk_floats // self.chunk_rows)
        if q <= block:
            return self._brute_block(keys)
        return torch.cat([self._brute_block(keys[s:s + block]) for s in range(0, q, block)])

    # ---------------------------------------------------------------- public
    @torch.no_grad()
    def query(self, keys: torch.Tensor) -> torch.Tensor:
        if keys.shape[-1] != self.dim:
            raise ValueError(f"keys must end in dimension {self.dim}, got shape {tuple(keys.shape)}")
        lead = keys.shape[:-1]
        flat = keys.detach().reshape(-1, self.dim).to(torch.float32)
        if self.method == "kdtree":
            _, idx = self._tree.query(flat.cpu().numpy().astype(np.float64), k=1, workers=self.workers)
            return torch.from_numpy(np.asarray(idx, dtype=np.int64)).to(keys.device).reshape(lead)
        return self._query_brute(flat.to(self.device)).to(keys.device).reshape(lead)
