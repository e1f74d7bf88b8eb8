"""Wall time of the bare main job, ``python -m search run --budget 300MFLOPs``, as a user runs it.

Runs the exact command (defaults: embedded digits, 12 candidates + 5 references, latency
measured after the search) in a fresh process and a temporary run folder, and reports the wall
time (goal: <= 5 minutes on a 2-core CPU without GPU), trials done and the phases from its log.

    python benchmarks/main_job.py [--out main_job.json] [-- extra run options]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._machine import benchmark_lock, machine  # noqa: E402
from results.runfolder import RunFolder  # noqa: E402


def _reference_block_ms(log: str) -> float | None:
    for line in log.splitlines():
        if line.strip().startswith("reference block:"):
            return float(line.split()[2])
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="write the JSON record here")
    ap.add_argument("--log", default=None, help="write the job's own output here")
    ap.add_argument("extra", nargs="*", help="extra options for search run (after --)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "search", "run", "--budget", "300MFLOPs",
               "--out", str(Path(tmp) / "run"), *args.extra]
        with benchmark_lock():  # alone on the machine, as a user's run would be
            info = machine()
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - start
        if args.log:
            Path(args.log).write_text(proc.stdout + proc.stderr)
        rows = RunFolder(Path(tmp) / "run").read_trials() if proc.returncode == 0 else []
    if proc.returncode != 0:
        sys.exit(f"the main job failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    cands = [r for r in rows if r["kind"] == "candidate"]
    record = {"machine": info, "command": " ".join(cmd[1:]), "wall_seconds": wall,
              "candidates": len(cands), "references": len(rows) - len(cands),
              "finished": sum(r["status"] == "finished" for r in cands),
              "early_stopped": sum(r["status"] == "early_stopped" for r in cands),
              "failed": sum(r["status"] == "failed" for r in rows),
              "latency_measured": sum(r["latency_ms"] is not None for r in rows),
              # the host's speed at the time (this VM's varies by several times): the latency
              # phase's undisturbed reference block, as the job's own log gives it
              "reference_block_ms": _reference_block_ms(proc.stdout)}
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
          f"load {info['load_1m']:.2f}")
    print(f"python -m search run --budget 300MFLOPs: {wall:.0f} s wall (goal <= 300 s); "
          f"{record['candidates']} candidates ({record['finished']} finished, "
          f"{record['early_stopped']} stopped early by the scheduler) + {record['references']} references,"
          f" {record['latency_measured']} latencies measured, {record['failed']} failed; "
          f"latency reference block {record['reference_block_ms']} ms (the host's speed)")
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
