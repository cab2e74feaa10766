"""How many of this process's cores other work leaves free, and the OpenMP wait policy that follows from it.

Read from /proc with the standard library alone, because the wait policy must be in the environment before
torch loads libgomp (it reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, then). offrl/__init__.py calls
`choose_wait_policy` on import; offrl/machine.py reads `free_cores()` for the automatic thread count.

Why: an OpenMP thread that waits for its peers by spinning makes the next parallel region start at once, so
two threads beat one on an idle machine; but when another process holds a core, a spinning thread burns the
time slice its descheduled peer needs, and one update can take 10-20x as long. Waiting passively (sleeping in
the kernel) is safe beside other jobs but pays a wake-up for every parallel region, which made two threads
slower than one for one seed. So: on a machine whose cores are free when offrl starts, threads spin for a
bounded time (`SPIN_COUNT` pauses, tens of microseconds: long enough to bridge the gaps between the kernels
of one update, short enough that a job arriving later costs a bounded slowdown); on a busy machine they wait
passively. A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT always wins. The rule and its measurements are in
docs/performance.md ("Threads and OpenMP's wait policy").
"""
from __future__ import annotations

import math
import os
import time

SPIN_COUNT = 2000  # libgomp spin iterations (one `pause` each) before a waiting thread sleeps
NOISE_CORES = 0.25  # busy time below this (daemons, a shell) leaves a core free
CHOSEN_BY_OFFRL = "OFFRL_OPENMP_CHOICE"  # marks the OpenMP variables as set by offrl, not by the user
SAMPLE_S = 0.1  # how long the CPUs are watched (this process sleeps meanwhile, so what is busy is others' work)
_measured: int | None = None


def usable_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask, which a container or taskset may narrow)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_jiffies(cpus: list[int]) -> tuple[int, int] | None:
    """(total, idle) jiffies summed over `cpus` from /proc/stat; None where it cannot be read."""
    wanted = {f"cpu{i}" for i in cpus}
    total = idle = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in wanted:
                    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
                    total += sum(values)
                    idle += values[3] + values[4]
    except (OSError, ValueError):
        return None
    return (total, idle) if total else None


def measure_free_cores(sample_s: float = SAMPLE_S) -> int:
    """Usable cores that other processes leave idle, watched over `sample_s` seconds (at least 1). Where
    /proc/stat is missing, the 1-minute load average stands in for the busy cores."""
    cpus = usable_cpus()
    before = _cpu_jiffies(cpus)
    if before is not None:
        time.sleep(sample_s)
        after = _cpu_jiffies(cpus)
    if before is not None and after is not None and after[0] > before[0]:
        busy = len(cpus) * (1.0 - (after[1] - before[1]) / (after[0] - before[0]))
    else:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cores_left(len(cpus), busy)


def cores_left(cores: int, busy: float) -> int:
    """Cores that `busy` cores' worth of other work leaves free (at least 1): a core counts as taken from
    `NOISE_CORES` of use up, since a spinning thread loses most where its peer's core is partly taken."""
    return max(1, min(cores, cores - math.ceil(busy - NOISE_CORES)))


def free_cores() -> int:
    """`measure_free_cores()` as measured once in this process (at import, before torch): one process keeps
    one answer, so its automatic thread count does not change with the load from call to call."""
    global _measured
    if _measured is None:
        _measured = measure_free_cores()
    return _measured


def choose_wait_policy(environ=os.environ) -> str:
    """Set OpenMP's wait policy for this process, unless the user set one; returns what is in force:
    "user", "spin" (free cores for a second thread: bounded spinning) or "passive".

    The choice goes into the environment, which child processes inherit (a sweep's workers, a benchmark's
    subprocesses); `CHOSEN_BY_OFFRL` marks it as offrl's, so that a child offrl process measures its own
    machine state instead of taking its parent's choice for a user's setting."""
    if environ.get(CHOSEN_BY_OFFRL) == _choice_of(environ):
        for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CHOSEN_BY_OFFRL):
            environ.pop(name, None)
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        return "user"
    if free_cores() >= 2:
        environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    else:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
    environ[CHOSEN_BY_OFFRL] = _choice_of(environ)
    return wait_policy(environ)


def _choice_of(environ) -> str:
    """The OpenMP variables as one string (what CHOSEN_BY_OFFRL records)."""
    return f"OMP_WAIT_POLICY={environ.get('OMP_WAIT_POLICY', '')};GOMP_SPINCOUNT={environ.get('GOMP_SPINCOUNT', '')}"


def wait_policy(environ=os.environ) -> str:
    """The policy in force: "spin" where offrl set its bounded spin, "passive", or "user" for anything else."""
    if environ.get("GOMP_SPINCOUNT") == str(SPIN_COUNT) and "OMP_WAIT_POLICY" not in environ:
        return "spin"
    if environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" and "GOMP_SPINCOUNT" not in environ:
        return "passive"
    return "user"


class OthersWatch:
    """Cores' worth of CPU time that other processes used since the last call, while this process runs: the
    busy time of the usable CPUs less this process's own CPU time (its spinning threads included)."""

    def __init__(self):
        self.cpus = usable_cpus()
        self._last = self._read()

    def _read(self):
        return _cpu_jiffies(self.cpus), time.process_time(), time.monotonic()

    def busy_cores(self) -> float | None:
        """Other processes' busy cores over the window since the previous call; None if unreadable."""
        (jiffies, own, wall), (jiffies0, own0, wall0) = self._read(), self._last
        self._last = (jiffies, own, wall)
        if jiffies is None or jiffies0 is None or jiffies[0] <= jiffies0[0] or wall <= wall0:
            return None
        all_busy = len(self.cpus) * (1.0 - (jiffies[1] - jiffies0[1]) / (jiffies[0] - jiffies0[0]))
        return max(0.0, all_busy - (own - own0) / (wall - wall0))
