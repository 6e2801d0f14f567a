"""Shared test setup: the repo root on sys.path and a fresh seed for every test."""
import os
import random
import sys

import numpy as np
import pytest

# pytest-xdist runs one worker per core: kernels stay single-threaded there, or the workers' OpenMP threads would
# outnumber the cores and every parallel region would wait for a descheduled thread
if os.environ.get("PYTEST_XDIST_WORKER") and "TEENYGRAD_THREADS" not in os.environ:
  os.environ["TEENYGRAD_THREADS"] = "1"
  os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from helpers import TORCH_ONLY  # noqa: E402 -- needs the path above


@pytest.fixture(autouse=True)
def reset_seed():
  """Each test starts from the same random state, whatever ran before it (and under pytest-xdist)."""
  random.seed(0)
  np.random.seed(0)
  try:
    import torch
    torch.manual_seed(0)
  except ImportError:
    pass
  if not TORCH_ONLY:
    try:
      import teenygrad
      teenygrad.manual_seed(0)
    except (ImportError, AttributeError):
      pass
  yield
