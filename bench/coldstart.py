"""Cold start of each Lambda function, from the built layer, as CPU time.

    python -m bench.coldstart                 # build the layer into out/layer, measure 5 runs each
    python -m bench.coldstart --layer DIR     # measure an existing build (DIR/python)

The layer is built by its own recipe (`make -C layers build-RxguardLayer`, what `sam build`
runs): the package without the moto harness, `rules/`, the runtime requirements as
platform wheels, boto3 left out (the runtime ships it) and bytecode compiled with
`--invalidation-mode unchecked-hash`. Lambda runs arm64; on another machine the arm64
wheels (pydantic-core, PyYAML, Pillow, ijson) cannot load, so the build here uses
`PLATFORM=manylinux2014_<this machine>`: the same files, wheels for this CPU, measurement only.

Each run is a fresh interpreter started like Lambda's: `python -I -S` (no site, no user or
environment paths), `sys.path` = the function's folder (`/var/task`), the layer's `python/`
(`/opt/python`), then the runtime's boto3 (here: this virtual environment's site-packages,
appended last so that nothing else resolves there first), and the function's environment
variables from template.yaml. The figure is the CPU time (`time.process_time`) of importing
`app.py` - Lambda's INIT phase - and, beside it, the whole process's CPU time
(`resource.getrusage`, interpreter start included). CPU, not wall time: on a shared, loaded
machine wall time mostly measures the wait for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 250.0

CHILD = """
import json, resource, sys, time
cpu0, wall0 = time.process_time(), time.perf_counter()
task, layer, runtime = sys.argv[1:4]
sys.path[:0] = [task, layer]
sys.path.append(runtime)
import importlib, importlib.util
if len(sys.argv) > 4:  # a reference: one module instead of the app
    importlib.import_module(sys.argv[4])
else:
    spec = importlib.util.spec_from_file_location("app", task + "/app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
usage = resource.getrusage(resource.RUSAGE_SELF)
bad = sorted({m.split(".")[0] for m, v in sys.modules.items() if getattr(v, "__file__", None)
              and not any(str(v.__file__).startswith(p) for p in (task, layer, runtime, sys.base_prefix))})
print(json.dumps({"import_cpu_s": cpu, "import_wall_s": wall,
                  "process_cpu_s": usage.ru_utime + usage.ru_stime, "modules": len(sys.modules),
                  "from_elsewhere": bad}))
"""


def wheel_platform() -> str:
    machine = platform.machine().lower()
    return "manylinux2014_" + {"arm64": "aarch64", "amd64": "x86_64"}.get(machine, machine)


def build_layer(out: Path) -> Path:
    """`make -C layers build-RxguardLayer` into `out` for this machine's CPU; returns out/python."""
    subprocess.run(["rm", "-rf", str(out)], check=True)
    proc = subprocess.run(
        [
            "make",
            "-C",
            str(ROOT / "layers"),
            "build-RxguardLayer",
            f"ARTIFACTS_DIR={out}",
            f"PLATFORM={wheel_platform()}",
            f"PYTHON={sys.executable}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"layer build failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return out / "python"


def function_environments() -> dict[str, dict[str, str]]:
    """Each function folder's environment variables as template.yaml sets them."""
    from bench.__main__ import function_environments as from_template

    return from_template()


def measure(layer: Path, runs: int = 5) -> dict[str, Any]:
    """CPU ms of importing each functions/<name>/app.py from the built layer (median of runs)."""
    runtime = sysconfig.get_paths()["purelib"]  # boto3/botocore stand in for the runtime's
    environments = function_environments()
    base = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_LAMBDA_FUNCTION_NAME": "bench",
        "LANG": "C.UTF-8",
    }

    def run(folder: Path, env: dict[str, str], module: str | None = None) -> list[dict[str, Any]]:
        figures = []
        for _ in range(runs):
            extra = [module] if module else []
            proc = subprocess.run(
                [sys.executable, "-I", "-S", "-c", CHILD, str(folder), str(layer), runtime, *extra],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                cwd=str(folder),
            )
            if proc.returncode != 0:
                raise RuntimeError(f"{folder.name} failed to import from the layer: {proc.stderr.strip()[-400:]}")
            figures.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        return figures

    out: dict[str, Any] = {}
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        name = app.parent.name
        figures = run(app.parent, {**base, **environments.get(name, {})})
        cpu = [f["import_cpu_s"] * 1000 for f in figures]
        out[name] = {
            "import_cpu_ms_median": round(statistics.median(cpu), 1),
            "import_cpu_ms_min": round(min(cpu), 1),
            "import_cpu_ms_max": round(max(cpu), 1),
            "import_wall_ms_median": round(statistics.median(f["import_wall_s"] for f in figures) * 1000, 1),
            "process_cpu_ms_median": round(statistics.median(f["process_cpu_s"] for f in figures) * 1000, 1),
            "modules": figures[0]["modules"],
            "loaded_from_outside_the_layer": figures[0]["from_elsewhere"],
            "runs": runs,
            "within_target": statistics.median(cpu) <= TARGET_MS,
        }
    # what any function using the AWS SDK pays before its own code: boto3 from the runtime
    reference = run(ROOT / "functions" / "screen", base, "boto3")
    out["(boto3 alone)"] = {
        "import_cpu_ms_median": round(statistics.median(f["import_cpu_s"] for f in reference) * 1000, 1),
        "import_cpu_ms_min": round(min(f["import_cpu_s"] for f in reference) * 1000, 1),
        "runs": runs,
    }
    return out


def measure_built(runs: int = 5, layer: Path | None = None) -> dict[str, Any]:
    """Build the layer (unless given) and measure every function."""
    built = layer if layer is not None else build_layer(ROOT / "out" / "layer")
    return {
        "layer": str(built),
        "platform": wheel_platform(),
        "layer_mb": round(sum(p.stat().st_size for p in built.rglob("*") if p.is_file()) / 2**20, 1),
        "functions": measure(built, runs),
        "target_ms": TARGET_MS,
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layer", type=Path, help="an existing build's python/ folder (default: build one)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    figures = measure_built(args.runs, args.layer)
    print(json.dumps(figures, indent=1))
    for name, f in figures["functions"].items():
        print(
            f"{name:14} import {f['import_cpu_ms_median']:6.1f} ms CPU (min {f['import_cpu_ms_min']}), "
            f"target {TARGET_MS:.0f} ms",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
