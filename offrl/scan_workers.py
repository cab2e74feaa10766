"""Worker processes that share a `BlockScan` query out between them, so that a run given several threads uses
them for PRDC's neighbour search too.

The block scan is a Python loop of small torch ops (offrl/neighbours.py): a second torch thread does not speed
it up, nor do Python threads over parts of the keys (the loop holds the GIL between ops). Its keys are
independent, though, so processes can each scan a part of them. `ScanWorkers(scan, n)` forks n processes
that inherit the BlockScan (its pages are shared copy-on-write and only read, so the points are not copied);
`nearest(keys, start)` sends each a share of the keys, scans the first share itself and gathers the ids, which
are what `scan.nearest` returns (each key is scanned whole by one process). Fork, not spawn: a spawned worker
re-runs the user's main script, which then needs an `if __name__ == "__main__"` guard. A forked child must not
use the parent's OpenMP thread team, so it runs torch on one thread (as PyTorch's DataLoader workers do) and
only ever scans. Until the workers have said they are up, and if one fails, the calling process scans alone.
"""
from __future__ import annotations

import weakref

import numpy as np
import multiprocessing as mp
import signal

import torch


def _serve(conn, scan) -> None:
    """A worker: answer (keys, start) messages with ids until told to stop or the parent is gone."""
    # Ctrl-C reaches the whole process group: the parent decides what it means (offrl's runs save and stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent closed its end or died
            return
        if message is None:
            return
        keys, start = message
        conn.send(scan.nearest(torch.from_numpy(keys), torch.from_numpy(start)).numpy())


def _stop(processes, conns) -> None:
    for conn in conns:
        try:
            conn.send(None)
            conn.close()
        except (OSError, ValueError):
            pass
    for p in processes:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()


class ScanWorkers:
    """`n` processes serving `scan` (a BlockScan); `nearest` splits keys between them and the calling process."""

    # below this many keys per process, sending them costs more than scanning them here
    min_keys = 32

    def __init__(self, scan, n: int):
        self.scan = scan
        ctx = mp.get_context("fork")
        self.processes, self.conns = [], []
        for _ in range(n):
            here, there = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(there, scan), daemon=True, name="offrl-block-scan")
            p.start()
            there.close()
            self.processes.append(p)
            self.conns.append(here)
        self._finalizer = weakref.finalize(self, _stop, self.processes, self.conns)
        self._waiting = list(self.conns)  # workers that have not said "ready" yet
        self.shared_calls = 0  # calls whose keys the workers helped with

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def _ready(self) -> bool:
        """True once every worker has started (never blocks)."""
        for conn in list(self._waiting):
            if not conn.poll():
                return False
            if conn.recv() != "ready":
                raise EOFError
            self._waiting.remove(conn)
        return True

    # a worker that has not answered by then is taken for stuck (a scan of 768 far keys takes well under a second)
    answer_timeout_s = 120.0

    def _answer(self, conn) -> np.ndarray:
        if not conn.poll(self.answer_timeout_s):
            raise EOFError
        return conn.recv()

    def nearest(self, keys: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """`scan.nearest(keys, start)`, with the keys shared among the workers and this process."""
        parts = min(len(self.conns) + 1, len(keys) // self.min_keys)
        try:
            if parts < 2 or not self.alive or not self._ready():
                return self.scan.nearest(keys, start)
            cut = np.linspace(0, len(keys), parts + 1).astype(int)
            k, s = keys.numpy(), start.numpy()
            for i, conn in enumerate(self.conns[:parts - 1], start=1):
                conn.send((k[cut[i]:cut[i + 1]], s[cut[i]:cut[i + 1]]))
            mine = self.scan.nearest(keys[:cut[1]], start[:cut[1]])
            theirs = [torch.from_numpy(self._answer(conn)) for conn in self.conns[:parts - 1]]
            self.shared_calls += 1
        except (EOFError, OSError, ValueError):  # a worker died: scan alone from now on
            self.close()
            return self.scan.nearest(keys, start)
        return torch.cat([mine, *theirs])
