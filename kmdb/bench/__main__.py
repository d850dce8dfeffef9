"""bin/bench [OPTIONS]: the import benchmark; bin/bench scale [OPTIONS]: kmdb.bench_scale's."""

from __future__ import annotations

import importlib.util
import runpy
import sys

# Benchmarks run by name: `bin/bench NAME ...` runs `python -m MODULE ...`.
SUBCOMMANDS = {"scale": "kmdb.bench_scale"}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark that argv names (the import benchmark when it names none)."""
    args = sys.argv[1:] if argv is None else argv
    module = SUBCOMMANDS.get(args[0]) if args else None
    if module is None:
        from kmdb.bench.imports import main as imports

        return imports(args)
    if importlib.util.find_spec(module) is None:
        print(f"bin/bench {args[0]}: this build has no {module}.", file=sys.stderr)
        return 2
    # As `python -m MODULE ...` would: its own sys.exit ends the process with its status.
    sys.argv = [f"bin/bench {args[0]}", *args[1:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
