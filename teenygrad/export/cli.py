"""`teenygrad export`: write the C library of a function named on the command line.

    teenygrad export examples/mlp.py:make --name mlp --out build/ --target cortex-m4
    python -m teenygrad.export.cli mypackage.models:make_export --int8

The spec is MODULE:FACTORY or FILE.py:FACTORY. The factory takes no arguments and returns either a tuple
(fn, example_inputs) or a dict with keys fn, inputs and optionally weights, input_names, output_names: the
arguments of `teenygrad.export.to_c`. teenygrad/cli.py hooks this in with `add_subparser(subparsers)` and then
`sys.exit(args.func(args))`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path


def add_subparser(subparsers) -> argparse.ArgumentParser:
  """Register `export` on the main command's subparsers; the parsed args carry `func` to call."""
  parser = subparsers.add_parser("export", help="export a function as a freestanding C99 library",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  _arguments(parser)
  parser.set_defaults(func=run)
  return parser


def _arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("spec", help="MODULE:FACTORY or FILE.py:FACTORY returning (fn, example_inputs) or a dict of to_c arguments")
  parser.add_argument("--name", default="model", help="C identifier for the files, the entry point and globals (default: model)")
  parser.add_argument("--out", default=".", help="folder for <name>.h and <name>.c (default: the current folder)")
  parser.add_argument("--int8", action="store_true", help="store constant weights as int8 with per-channel scales")
  parser.add_argument("--target", action="append", default=[], choices=["host", "cortex-m3", "cortex-m4"],
                      help="also compile the library for this target and report its code size (repeatable)")


def load_factory(spec: str):
  """The callable named by MODULE:FACTORY or FILE.py:FACTORY."""
  module_name, sep, attr = spec.rpartition(":")
  if not sep or not module_name or not attr: raise ValueError(f"expected MODULE:FACTORY or FILE.py:FACTORY, got {spec!r}")
  if module_name.endswith(".py"):
    path = Path(module_name)
    if not path.is_file(): raise FileNotFoundError(f"no such file: {path}")
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  else: module = importlib.import_module(module_name)
  factory = getattr(module, attr, None)
  if not callable(factory): raise ValueError(f"{module_name} has no callable {attr!r}")
  return factory


def run_export(args: argparse.Namespace) -> int:
  from teenygrad.export import to_c
  from teenygrad.export.targets import missing_tools, section_sizes
  made = load_factory(args.spec)()
  if isinstance(made, tuple) and len(made) == 2: made = {"fn": made[0], "inputs": made[1]}
  if not isinstance(made, dict) or "fn" not in made or "inputs" not in made:
    raise ValueError(f"{args.spec} must return (fn, example_inputs) or a dict with 'fn' and 'inputs'")
  extra = {k: made[k] for k in ("weights", "input_names", "output_names") if k in made}
  lib = to_c(made["fn"], made["inputs"], name=args.name, out_dir=args.out, quantize="int8" if args.int8 else None, **extra)
  for target in args.target:
    reason = missing_tools(target)
    if reason: raise RuntimeError(f"cannot measure on {target}: {reason}")
    lib.report.code_bytes[target] = section_sizes(target, Path(args.out) / f"{args.name}.c")["text"]
  print(f"wrote {Path(args.out) / (args.name + '.h')} and {Path(args.out) / (args.name + '.c')}")
  print(lib.report)
  return 0


def run(args: argparse.Namespace) -> int:
  """run_export with the errors a user can cause printed as one line (exit status 2) instead of a traceback."""
  from teenygrad.export.capture import ExportError
  try: return run_export(args)
  except (ExportError, ValueError, FileNotFoundError, ImportError, RuntimeError, NotImplementedError) as e:
    print(f"teenygrad export: error: {e}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="teenygrad export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  _arguments(parser)
  return run(parser.parse_args(argv))


if __name__ == "__main__": sys.exit(main())
