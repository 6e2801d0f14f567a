"""The random state: numpy's PCG64 on the host, seeded by manual_seed (device-side generators can come later)."""
from __future__ import annotations

import numpy as np

_state = {"rng": np.random.default_rng(0), "seed": 0}


def manual_seed(seed: int) -> None:
  _state["rng"], _state["seed"] = np.random.default_rng(int(seed)), int(seed)


def host_rng() -> np.random.Generator: return _state["rng"]


def get_rng_state() -> dict: return _state["rng"].bit_generator.state


def set_rng_state(state: dict) -> None:
  rng = np.random.default_rng()
  rng.bit_generator.state = state
  _state["rng"] = rng
