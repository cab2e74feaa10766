"""Making Gymnasium envs, the one place the suite does it.

gymnasium's half_cheetah.xml still sets `settotalmass`, and mujoco 3.17 warns about it on every model load:
to stderr and to MUJOCO_LOG.TXT in the user's working directory. An evaluation makes one env per episode and
seed, so a run printed 30 copies and left a stray file. The warning is harmless (the mass is still set), so
that one message is dropped; any other MuJoCo warning becomes a Python warning.
"""
from __future__ import annotations

import contextlib
import warnings

import gymnasium as gym


@contextlib.contextmanager
def quiet_mujoco():
    """Within: MuJoCo's `settotalmass` deprecation is dropped, its other warnings are Python warnings."""
    try:
        import mujoco
    except ImportError:  # no MuJoCo installed: nothing to quiet
        yield
        return
    prev = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda msg: None if "settotalmass" in msg else warnings.warn(f"MuJoCo: {msg}"))
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(prev)


def make_env(env_id: str, **kwargs) -> gym.Env:
    """gym.make(env_id, **kwargs), quiet about `settotalmass`."""
    with quiet_mujoco():
        return gym.make(env_id, **kwargs)
