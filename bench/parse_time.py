"""Parse time of ``dags/fitness_sync.py`` against a trivial three-task TaskFlow DAG, as the DAG processor parses.

Every measurement runs in a fresh Python subprocess, so no import cache carries over between
measurements. Files alternate (fitness_sync, trivial, fitness_sync, ...) ``--repeat`` times each
(default 7). Each subprocess first imports, UNTIMED, what the DAG processor has loaded before it
reads any file, then times ``DagBag(dag_folder=<that one file>)``. Two set-ups are measured:

* ``airflow imported``: only ``import airflow`` and ``from airflow.models import DagBag`` happen before the
  clock starts.
* ``DAG-processor-like``: also ``airflow.dag_processing.processor`` and the Airflow modules the file imports
  (found in its source the way the processor's ``[dag_processor] parsing_pre_import_modules`` does:
  that pre-import happens in the processor before it forks the parsing child). The timing is then what
  the child spends on the file itself: its own imports, building the DAG and the DagBag's checks.
  The manager's ``gc.freeze()`` before forking is applied too. The serialization the child does next
  (``DagSerialization.to_dict``) is timed separately.

In both set-ups ``dag``/``task``/``task_group`` are lazy attributes of ``airflow.sdk``: the decorator modules
and the standard provider's PythonOperator they pull in (~50 modules) load inside the timing, for both files.

How to read the output: per file and set-up, the median and the minimum (in milliseconds) of the runs,
the median CPU time of the parsing process (steadier than wall-clock time on a busy machine), the modules
the parse imported (new entries in ``sys.modules``), then ``fitness_sync / trivial`` from the wall-clock
medians (target <= 1.20), with the ratios from the minimums and from CPU time beside it.
Nothing is asserted; the exit code is non-zero only if the script crashes.
``airflow dags report`` is run once over a folder holding copies of both files and its durations are shown:
it parses them one after the other in ONE process, so the first file also pays the imports both share.

Run: ``cd /work/main && PYTHONPATH=plugins:devtools .venv/bin/python bench/parse_time.py [--repeat N]``
(or ``make bench``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("plugins", "devtools")]

from fitness_devtools.embedded_stack import REPO, airflow_env  # noqa: E402

FITNESS_DAG = REPO / "dags" / "fitness_sync.py"
RESULT_MARK = "BENCH-RESULT "
MODES = {
    "airflow": "airflow imported",
    "processor": "DAG-processor-like",
}

TRIVIAL_DAG = '''"""A trivial three-task TaskFlow DAG: the parse-time baseline."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task


@dag(dag_id="trivial", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False)
def trivial() -> None:
    @task
    def first() -> int:
        return 1

    @task
    def second(value: int) -> int:
        return value + 1

    @task
    def third(value: int) -> None:
        print(value)

    third(second(first()))


trivial()
'''

SAME_SHAPE_DAG = '''"""A trivial DAG of fitness_sync's shape (10 tasks: one, then three groups of three), no params."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag, task, task_group


@dag(dag_id="same_shape", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False)
def same_shape() -> None:
    @task
    def first() -> int:
        return 1

    def group(name: str) -> None:
        @task_group(group_id=name)
        def chain() -> None:
            @task
            def extract() -> int:
                return 1

            @task
            def transform(value: int) -> int:
                return value

            @task
            def load(value: int) -> None:
                print(value)

            load(transform(extract()))

        return chain()

    first() >> [group(name) for name in ("a", "b", "c")]


same_shape()
'''


# --- the measuring subprocess ---------------------------------------------------------------------


def worker(mode: str, dag_file: str) -> None:
    """Runs in a fresh interpreter: untimed preparation, then one timed DagBag parse of ``dag_file``."""
    import airflow  # noqa: F401 - loaded before any file, untimed
    from airflow.models import DagBag

    if mode == "processor":
        from airflow.utils.file import iter_airflow_imports

        importlib.import_module("airflow.dag_processing.processor")
        for module in iter_airflow_imports(dag_file):
            # the processor logs a failure and goes on (e.g. an Airflow 2 fallback import)
            with contextlib.suppress(Exception):
                importlib.import_module(module)
        gc.freeze()  # the manager freezes its heap before it forks parsing children
    modules_before = set(sys.modules)

    start, cpu_start = time.perf_counter(), time.process_time()
    bag = DagBag(dag_folder=dag_file, load_op_links=False)
    parse, parse_cpu = time.perf_counter() - start, time.process_time() - cpu_start

    from airflow.serialization.serialized_objects import DagSerialization

    start = time.perf_counter()
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    serialize = time.perf_counter() - start

    new_modules = sorted(m for m in set(sys.modules) - modules_before if not m.startswith("unusual_prefix_"))
    print(RESULT_MARK + json.dumps({
        "parse": parse, "parse_cpu": parse_cpu, "serialize": serialize,
        "dags": sorted(bag.dag_ids), "errors": bag.import_errors,
        "tasks": sum(len(dag.tasks) for dag in bag.dags.values()), "new_modules": new_modules,
    }))


# --- the driver -----------------------------------------------------------------------------------


@dataclass
class Series:
    parse: list[float] = field(default_factory=list)
    parse_cpu: list[float] = field(default_factory=list)
    serialize: list[float] = field(default_factory=list)
    new_modules: list[int] = field(default_factory=list)
    module_names: set[str] = field(default_factory=set)
    tasks: int = 0


def measure_once(mode: str, dag_file: Path, env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run([sys.executable, __file__, "--worker", mode, str(dag_file)], env=env,
                               capture_output=True, text=True, check=False)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK):])
            if result["errors"] or not result["dags"]:
                raise SystemExit(f"{dag_file} did not parse cleanly: {result['errors']}")
            return result
    raise SystemExit(f"worker failed for {dag_file} (exit {completed.returncode}):\n{completed.stderr[-3000:]}")


def dags_report(env: dict[str, str], files: Sequence[Path], workdir: Path) -> list[str]:
    """``airflow dags report`` over a folder holding copies of ``files`` (it parses a whole bundle)."""
    folder = workdir / "report_dags"
    folder.mkdir()
    for file in files:
        shutil.copy(file, folder / file.name)
    completed = subprocess.run([sys.executable, "-m", "airflow", "dags", "report", "-o", "json"],
                               env={**env, "AIRFLOW__CORE__DAGS_FOLDER": str(folder)},
                               capture_output=True, text=True, check=False)
    report = None
    for line in completed.stdout.splitlines():  # log lines come first; the JSON list is one line
        if line.startswith("[{"):
            with contextlib.suppress(json.JSONDecodeError):
                report = json.loads(line)
    if not isinstance(report, list):
        return [f"(airflow dags report gave no JSON, exit {completed.returncode})"]
    return [f"{entry.get('file')}: duration {entry.get('duration')}, dags {entry.get('dag_num')}, "
            f"tasks {entry.get('task_num')}" for entry in report]


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7, help="parses per file and set-up (default 7)")
    parser.add_argument("--modes", default="airflow,processor",
                        help="comma-separated set-ups: airflow, processor (default both)")
    parser.add_argument("--no-report", action="store_true", help="skip `airflow dags report`")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return

    workdir = Path(tempfile.mkdtemp(prefix="bench-parse-"))
    try:
        run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    env = {**os.environ, **airflow_env(workdir / "airflow")}  # PYTHONPATH gets plugins/ and devtools/
    dags_dir = workdir / "dags"
    dags_dir.mkdir()
    trivial = dags_dir / "trivial.py"
    trivial.write_text(TRIVIAL_DAG)
    same_shape = dags_dir / "same_shape.py"
    same_shape.write_text(SAME_SHAPE_DAG)
    files = {"fitness_sync": FITNESS_DAG, "trivial": trivial, "same_shape": same_shape}

    version = subprocess.run([sys.executable, "-c", "import airflow; print(airflow.__version__)"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    print(f"Python {platform.python_version()}, Airflow {version}, {os.cpu_count()} CPUs; "
          f"airflow db migrate (SQLite) took {time.perf_counter() - start:.1f} s")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    repeat = max(1, args.repeat)
    print(f"{repeat} fresh subprocesses per file and set-up, files alternating; times in ms\n")

    results: dict[tuple[str, str], Series] = {}
    for mode in modes:
        for _ in range(repeat):
            for name, path in files.items():
                result = measure_once(mode, path, env)
                series = results.setdefault((mode, name), Series())
                series.parse.append(result["parse"])
                series.parse_cpu.append(result["parse_cpu"])
                series.serialize.append(result["serialize"])
                series.new_modules.append(len(result["new_modules"]))
                series.module_names = set(result["new_modules"])
                series.tasks = result["tasks"]

    header = (f"{'set-up':<20} {'file':<14} {'tasks':>5} {'parse median':>12} {'parse min':>10} "
              f"{'CPU median':>10} {'serialize med':>13} {'modules imported':>16}")
    print(header)
    print("-" * len(header))
    for (mode, name), s in results.items():
        print(f"{MODES[mode]:<20} {name:<14} {s.tasks:>5} {fmt_ms(statistics.median(s.parse)):>12} "
              f"{fmt_ms(min(s.parse)):>10} {fmt_ms(statistics.median(s.parse_cpu)):>10} "
              f"{fmt_ms(statistics.median(s.serialize)):>13} {statistics.median(s.new_modules):>16.0f}")
    print()
    for mode in modes:
        fitness, base = results[(mode, "fitness_sync")], results[(mode, "trivial")]
        extra = sorted(fitness.module_names - base.module_names)
        print(f"[{MODES[mode]}] modules only fitness_sync's parse imported: {', '.join(extra) or 'none'}")
    print()
    for mode in modes:
        fitness, base = results[(mode, "fitness_sync")], results[(mode, "trivial")]
        ratio = statistics.median(fitness.parse) / statistics.median(base.parse)
        ratio_min = min(fitness.parse) / min(base.parse)
        ratio_cpu = statistics.median(fitness.parse_cpu) / statistics.median(base.parse_cpu)
        print(f"[{MODES[mode]}] fitness_sync / trivial = {ratio:.2f} (target <= 1.20)  "
              f"[wall-clock medians; from minimums {ratio_min:.2f}, from CPU-time medians {ratio_cpu:.2f}]")
        shape = results[(mode, "same_shape")]
        print(f"[{MODES[mode]}] fitness_sync / trivial of the same shape (10 tasks, no params) = "
              f"{statistics.median(fitness.parse) / statistics.median(shape.parse):.2f}  [from CPU-time medians "
              f"{statistics.median(fitness.parse_cpu) / statistics.median(shape.parse_cpu):.2f}]")

    if not args.no_report:
        print("\nairflow dags report (one run over a folder with both files):")
        for line in dags_report(env, list(files.values()), workdir):
            print(f"  {line}")


if __name__ == "__main__":
    main()
