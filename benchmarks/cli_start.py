"""`thumbify thumbnail` end to end against a bare pyvips pool: whole processes, start-up included.

    python -m benchmarks.cli_start [--corpus DIR] [--files 4,24,96] [--rounds 5] [--before DIR] [--no-floors]

For each file count, every method runs once per round, the order rotating, after one warm-up round that is not
counted. Each run is a fresh process in its checkout's folder, started and reaped here: CPU is its user + system
seconds with those of the children it waited for (the render processes; `RUSAGE_CHILDREN` before and after), wall
is start to reaped. Methods:

  pool        `benchmarks/bare_pool.py`: one spawned process per core, `Image.thumbnail(file, 256, height=256)` +
              `jpegsave_buffer(Q=80)`, libvips concurrency 1 (the yardstick)
  cli         `python -m thumbify_cli thumbnail -o DIR FILE...` (fit 256, JPEG q80: the defaults)
  cli-script  the same through a `thumbify` console script as pip writes it for this checkout's entry point (a
              spawned render process would run it again as its `__main__`; under -m it skips that)
  before      `--before DIR`: `cli` from another checkout (e.g. `git archive HEAD~1 | tar -x -C DIR`)

Ratios are the pool's seconds over the method's, taken within each round (≥ 1: the CLI is at least as fast), and
their median is reported; the load average is printed beside them. The files are the corpus's 12 MP photos, reused
through symbolic links under other names where more are asked for than the corpus has. Then the start-up floors:
the CPU of a whole `python -c` that only imports what each process imports before its first image (FLOORS).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from benchmarks import corpus as corpus_mod
from benchmarks.common import BENCH, DEFAULT_CORPUS, PYTHON, ROOT, summary, table, write_json

POOL = "pool"


def console_script(folder: Path) -> Path:
    """The `thumbify` script pip writes for this checkout's `[project.scripts]` entry, in `folder`."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["thumbify"]
    module, attr = entry.split(":")
    script = folder / "thumbify"
    script.write_text(
        f"import sys\nfrom {module} import {attr}\nif __name__ == '__main__':\n"
        f"    sys.argv[0] = sys.argv[0].removesuffix('.exe')\n    sys.exit({attr}())\n"
    )
    return script


def methods(scratch: Path, before: Path | None) -> dict[str, tuple[list[str], Path]]:
    """name → (argv before `-o DIR FILE...`, the checkout it imports from)."""
    found = {
        POOL: ([PYTHON, str(BENCH / "bare_pool.py")], ROOT),
        "cli": ([PYTHON, "-m", "thumbify_cli", "thumbnail"], ROOT),
        "cli-script": ([PYTHON, str(console_script(scratch)), "thumbnail"], ROOT),
    }
    if before:
        found["before"] = ([PYTHON, "-m", "thumbify_cli", "thumbnail"], before.resolve())
    return found


# The start-up floors: what a process imports before its first image, each a whole `python -c` run.
FLOORS = {
    "interpreter alone": "pass",
    "pool parent": "import concurrent.futures.process",
    "pool render process (spawned)": "import concurrent.futures.process, multiprocessing.spawn, pyvips",
    "CLI parent, parsing (typer app)": "import thumbify_cli.app",
    "CLI parent, set up to render (+ settings, backend)": (
        "import thumbify_cli.app, thumbify_cli.render, concurrent.futures.process, gpu_worker.backends.vips;"
        "from thumbify.settings import Settings; Settings()"
    ),
    "CLI render process if spawned": (
        "import concurrent.futures.process, multiprocessing.spawn, thumbify_cli.render, gpu_worker.backends.vips"
    ),
    "pydantic alone (BaseModel)": "import pydantic; from pydantic import BaseModel",
    "pydantic-settings (pydantic included)": "import pydantic_settings",
}


def floors(rounds: int) -> dict[str, float]:
    """Median CPU seconds of each FLOORS import, `rounds` runs each, interleaved."""
    runs: dict[str, list[float]] = {name: [] for name in FLOORS}
    for _ in range(rounds):
        for name, code in FLOORS.items():
            runs[name].append(run_once([PYTHON, "-c", code], ROOT, [], None)[0])
    return {name: statistics.median(values) for name, values in runs.items()}


def files_of(photos: list[Path], count: int, folder: Path) -> list[Path]:
    """`count` links to the photos, cycling (distinct names, so distinct thumbnails)."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(count):
        link = folder / f"p{i:03}_{photos[i % len(photos)].name}"
        link.symlink_to(photos[i % len(photos)])
        links.append(link)
    return links


def run_once(argv: list[str], checkout: Path, files: list[Path], out: Path | None) -> tuple[float, float]:
    """(CPU seconds with its reaped children, wall seconds) of one whole run (`-o out FILE...` added where `out`
    is given); raises if it failed or missed a file."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [*argv, "-o", str(out), *map(str, files)] if out else argv
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    status = subprocess.run(command, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    made = len(list(out.iterdir())) if out and out.exists() else 0
    if status.returncode != 0 or made != len(files):
        raise RuntimeError(f"{' '.join(argv)}: exit {status.returncode}, {made}/{len(files)} made")
    if out:
        shutil.rmtree(out)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.cli_start")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--files", default="4,24,96", help="comma list of file counts (default 4,24,96)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per count (default 5), after a warm-up")
    parser.add_argument("--before", type=Path, help="another checkout whose CLI to time beside this one")
    parser.add_argument("--skip", default="", help="comma list of methods to leave out")
    parser.add_argument("--no-floors", action="store_true", help="skip the start-up floors (imports alone)")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/cli_start.json)")
    args = parser.parse_args(argv)
    photos = corpus_mod.ensure(args.corpus, photos=24, web=False).photos
    counts = [int(c) for c in args.files.split(",")]
    skip = set(args.skip.split(","))
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cli-start-") as tmp:
        scratch = Path(tmp)
        chosen = {k: v for k, v in methods(scratch, args.before).items() if k not in skip or k == POOL}
        for count in counts:
            files = files_of(photos, count, scratch / f"in{count}")
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in chosen}
            names = list(chosen)
            for round_ in range(args.rounds + 1):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    command, checkout = chosen[name]
                    measured = run_once(command, checkout, files, scratch / "out")
                    if round_:
                        times[name].append(measured)
                print(f"{count} files, round {round_}/{args.rounds}, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
            pool = times[POOL]
            per_count = results[str(count)] = {}
            for name, runs in times.items():
                cpu, wall = [r[0] for r in runs], [r[1] for r in runs]
                cpu_ratio = statistics.median(p[0] / r[0] for p, r in zip(pool, runs, strict=True))
                wall_ratio = statistics.median(p[1] / r[1] for p, r in zip(pool, runs, strict=True))
                per_count[name] = {
                    "cpu_s": summary(cpu),
                    "wall_s": summary(wall),
                    "pool_over_cpu": cpu_ratio,
                    "pool_over_wall": wall_ratio,
                }
                rows.append(
                    [
                        f"{count} × {name}",
                        statistics.median(cpu),
                        f"{min(cpu):.2f}–{max(cpu):.2f}",
                        statistics.median(wall),
                        f"{min(wall):.2f}–{max(wall):.2f}",
                        cpu_ratio,
                        wall_ratio,
                    ]
                )
    load_after = os.getloadavg()
    note = (
        f"{args.rounds} rounds (+1 warm-up), {len(os.sched_getaffinity(0))} cores; "
        f"load average {load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end. "
        "Ratios: the pool's seconds over the method's, median of per-round ratios (≥ 1: as fast as the pool)."
    )
    columns = ["files × method", "CPU s", "range", "wall s", "range", "pool/CPU", "pool/wall"]
    table("thumbify thumbnail vs a bare pyvips pool, whole processes", columns, rows, note)
    note_floors = f"median of {args.rounds} runs each; the imports: FLOORS in benchmarks/cli_start.py"
    if not args.no_floors:
        found = results["floors_cpu_s"] = floors(args.rounds)
        rows = [[name, seconds * 1000] for name, seconds in found.items()]
        table("Start-up floors: CPU ms of a whole `python -c` that imports …", ["what", "CPU ms"], rows, note_floors)
    results["load_average"] = {"start": load_before, "end": load_after}
    print(f"→ {write_json('cli_start', {'results': results}, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
