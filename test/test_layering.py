"""The layers of DESIGN.md import only from the layers above them. Every import is checked, including those inside
functions: a lazy import is still a dependency, and an upward edge means a boundary is in the wrong place."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "teenygrad"

# top-level module or package of teenygrad -> layer (lower numbers are above: they may be imported by higher ones)
LAYERS = {
  "dtype": 0, "helpers": 0,
  "ir": 1,
  "tensor": 2, "autograd": 2,
  "schedule": 3,
  "codegen": 4,
  "renderer": 5,
  "device": 6,
  "engine": 7,
  "nn": 8, "optim": 8, "state": 8, "data": 8, "amp": 8,
  "models": 9, "llm": 9, "onnx": 9, "export": 9, "distributed": 9, "store": 9, "profile": 9,
  "serve": 10, "cli": 10,
}


def _component(module: str) -> str | None:
  parts = module.split(".")
  if parts[0] != "teenygrad" or len(parts) < 2: return None
  return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
  tree = ast.parse(path.read_text(), filename=str(path))
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import): found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      found.append((node.lineno, node.module))
      if node.module == "teenygrad": found += [(node.lineno, f"teenygrad.{alias.name}") for alias in node.names]
  return found


def test_every_module_has_a_layer():
  missing = sorted({p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")} - set(LAYERS) - {"__init__"})
  assert not missing, f"add these to the layer table in DESIGN.md order: {missing}"


def test_no_import_points_up():
  violations = []
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(PACKAGE)
    if rel.parts == ("__init__.py",): continue   # the facade re-exports every layer
    own = LAYERS.get(rel.parts[0].removesuffix(".py"))
    for line, module in _imports(path):
      target = _component(module)
      if target is None or target not in LAYERS: continue
      if LAYERS[target] > own: violations.append(f"teenygrad/{rel}:{line} imports {module} (layer {LAYERS[target]} > {own})")
  assert not violations, "imports that point down the layer list:\n" + "\n".join(violations)
