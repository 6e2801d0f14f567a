"""An out-of-tree backend registers itself through the `teenygrad.backends` entry point and runs ops.

The package is written to a temporary folder with a real `.dist-info` (METADATA + entry_points.txt), so
`importlib.metadata` finds it the way it finds an installed wheel. It runs in a fresh interpreter: the entry
points are read once per process.
"""
import os
import subprocess
import sys
import textwrap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A backend that reuses the CPU classes under a new name and counts its launches, so the test can tell that the
# kernels really went through it.
PLUGIN = '''
"""MIRROR: the CPU backend's four classes under another name."""
from teenygrad.device.cpu import CPUBackend, CPUProgram

launches = []


class MirrorProgram(CPUProgram):
  def __call__(self, *bufs, vals=(), wait=False):
    launches.append(self.name)
    return super().__call__(*bufs, vals=vals, wait=wait)


class MirrorBackend(CPUBackend):
  has_gemm = False   # plain loops only: the op must not depend on the CPU's GEMM path

  def program(self, name, binary):
    return MirrorProgram(name, binary)


def open_device(name):
  return MirrorBackend(name)
'''

SCRIPT = '''
import numpy as np
import teenygrad
from teenygrad import Tensor
from teenygrad.device import Device
import tg_mirror_backend

assert "MIRROR" in Device.known(), Device.known()
a_np = np.arange(12, dtype=np.float32).reshape(3, 4)
b_np = np.linspace(-1, 1, 20, dtype=np.float32).reshape(4, 5)
a = Tensor(a_np, device="mirror")
b = Tensor(b_np, device="mirror")
assert a.device == "MIRROR", a.device
out = ((a @ b).relu() + a.sum()).softmax(-1)
assert out.device == "MIRROR"
ref = np.maximum(a_np @ b_np, 0) + a_np.sum()
ref = np.exp(ref - ref.max(-1, keepdims=True)); ref /= ref.sum(-1, keepdims=True)
np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-6)
x = Tensor(a_np, device="mirror", requires_grad=True)
(x * x).sum().backward()
np.testing.assert_allclose(x.grad.numpy(), 2 * a_np)
np.testing.assert_allclose(a.to("cpu").numpy(), a_np)
assert tg_mirror_backend.launches, "no kernel ran through the plugin"
print("ok", len(tg_mirror_backend.launches))
'''


def write_plugin(root: str) -> None:
  os.makedirs(os.path.join(root, "tg_mirror_backend"))
  with open(os.path.join(root, "tg_mirror_backend", "__init__.py"), "w") as f: f.write(PLUGIN)
  dist_info = os.path.join(root, "tg_mirror_backend-0.1.dist-info")
  os.makedirs(dist_info)
  with open(os.path.join(dist_info, "METADATA"), "w") as f:
    f.write("Metadata-Version: 2.1\nName: tg-mirror-backend\nVersion: 0.1\n")
  with open(os.path.join(dist_info, "entry_points.txt"), "w") as f:
    f.write(textwrap.dedent("""\
      [teenygrad.backends]
      mirror = tg_mirror_backend
      """))


def run_script(tmp_path, script: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO_ROOT]), DEV="CPU")
  return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)


def test_entry_point_backend_runs_ops(tmp_path):
  write_plugin(str(tmp_path))
  result = run_script(tmp_path, SCRIPT)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("ok"), result.stdout


def test_unknown_device_names_the_known_ones(tmp_path):
  write_plugin(str(tmp_path))
  result = run_script(tmp_path, "from teenygrad import Tensor\nTensor([1.0], device='nosuchdev').numpy()")
  assert result.returncode != 0
  assert "unknown device 'NOSUCHDEV'" in result.stderr and "MIRROR" in result.stderr, result.stderr
