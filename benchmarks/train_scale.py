"""Benchmark: training from scratch at scale on this machine (issue 20).

    python benchmarks/train_scale.py [--cifar PATH] [--parts parity,resume,streaming] [--sync-bn]
                                     [--seeds 3] [--epochs 8] [--out FILE]

On the real CIFAR-10 JPEG files (``--cifar``, a .tar.gz extracted to a temporary folder), each
run a ``python -m search train`` subprocess of ghostnet_050 at ``--resolution 64`` (held at
73 px, random-resized crops, stem stride 2), with decoded images cached in a temporary folder:

- parity: a class-balanced subset (``--parity-images``: 100 training and 50 test images a
  class by default) trained by one process (1 thread) and by 2 Ray Train workers (gloo, 1
  thread each) with the same global batch (32) and seed, for each of ``--seeds`` seeds: test
  top-1 of each, their differences, the spread across seeds, and the training throughput;
- resume: a 2-worker run killed (SIGKILL to the driver) once its first epoch's checkpoint is
  written, then ``--resume --workers 1``: the epoch it resumed from, its status and top-1, and
  the Ray processes the kill left behind;
- streaming: the full folder (45,000 training images after the validation split, 10,000
  test) with ``--max-train`` 1,000 and 9,000, held in memory (the default limit; the decode
  cache filled beforehand by an unmeasured run) and read from disk (``--in-memory-limit
  0.05``): the peak anonymous memory of the process tree (see ``_TreeMemory``, sampled every
  0.2 s) and the training throughput of each, one epoch;
- loader: the streaming loader alone (no network) reading one epoch of 1,000, 9,000 and 30,000
  training images of the full folder in a subprocess, batch 64, augmented: its peak anonymous
  memory, which should not depend on the number of images.

Printed, and written to ``--out`` (JSON): the parts run replace those of an existing record,
each with the machine it ran on (``<part>_machine``). The machine-wide benchmark lock is held
throughout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import benchmark_lock, machine

ROOT = Path(__file__).resolve().parents[1]
CIFAR = Path("/work/shared/data/cifar10-jpg.tar.gz")
MODEL, RESOLUTION, BATCH = "ghostnet_050", 64, 32
PARTS = ("parity", "resume", "streaming", "loader")
SIZES = (1000, 9000)  # --max-train of the streaming part
LOADER_SIZES = (1000, 9000, 30000)  # training images the loader part reads


def _extract(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def _subset(full: Path, into: Path, *, train: int, test: int) -> Path:
    """The first ``train`` / ``test`` files (by name) of every class, copied."""
    for split, n in (("train", train), ("test", test)):
        for cls in sorted(p for p in (full / split).iterdir() if p.is_dir()):
            (into / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                shutil.copy(f, into / split / cls.name / f.name)
    return into


class _TreeMemory:
    """Peak anonymous memory (bytes) of a process and its descendants, sampled: proportional
    set size of anonymous pages (``Pss_Anon``), so that pages a forked loader shares with its
    parent count once, and shared libraries and memory-mapped files (whose share depends on
    what else runs on the machine) not at all."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every, self.peak = pid, every, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tree(self, pid: int) -> list[int]:
        pids = [pid]
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    for child in fh.read().split():
                        pids += self._tree(int(child))
        except OSError:
            pass
        return pids

    @staticmethod
    def _pss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss_Anon:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, sum(self._pss(p) for p in self._tree(self.pid)))
            time.sleep(self.every)

    def stop(self) -> int:
        self.done.set()
        self.thread.join()
        return self.peak


def _train(args: list[str], *, env: dict[str, str], measure: bool = False
           ) -> tuple[dict, float, int | None]:
    """(train.json, wall seconds, peak memory of the process tree or None) of one run."""
    out = Path(args[args.index("--out") + 1])
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "search", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = _TreeMemory(proc.pid) if measure else None
    text, _ = proc.communicate()
    peak = memory.stop() if memory else None
    if proc.returncode != 0:
        raise RuntimeError(f"train {' '.join(args)} failed ({proc.returncode}):\n{text}")
    return json.loads((out / "train.json").read_text()), time.perf_counter() - t0, peak


def parity(data: Path, work: Path, env: dict[str, str], *, seeds: int, epochs: int,
           sync_bn: bool = False) -> dict:
    runs = []
    arms = [(1, 1, False), (2, 1, False)] + ([(2, 1, True)] if sync_bn else [])
    for seed in range(seeds):
        row = {"seed": seed}
        for workers, threads, sync in arms:
            name = f"workers_{workers}" + ("_sync_bn" if sync else "")
            out = work / f"parity-{seed}-{name}"
            record, wall, _ = _train(
                [MODEL, "--dataset", "folder", "--data-dir", str(data), "--resolution",
                 str(RESOLUTION), "--epochs", str(epochs), "--batch-size", str(BATCH),
                 "--seed", str(seed), "--threads", str(threads), "--workers", str(workers),
                 *(["--sync-bn"] if sync else []), "--out", str(out)], env=env)
            row[name] = {
                "top1": record["final"]["top1"], "loss": record["final"]["loss"],
                "images_per_second": record["final"]["images_per_second"],
                "wall_seconds": wall, "curve": [h["top1"] for h in record["history"]]}
            print(f"  seed {seed}, {name}: top1 {record['final']['top1']:.2f} % "
                  f"| {record['final']['images_per_second']:.0f} img/s | {wall:.0f} s",
                  flush=True)
        row["difference"] = row["workers_2"]["top1"] - row["workers_1"]["top1"]
        if sync_bn:
            row["difference_sync_bn"] = row["workers_2_sync_bn"]["top1"] - row["workers_1"]["top1"]
        runs.append(row)
    one = [r["workers_1"]["top1"] for r in runs]
    two = [r["workers_2"]["top1"] for r in runs]
    summary = {
        "epochs": epochs,
        "mean_top1_1_worker": statistics.mean(one), "mean_top1_2_workers": statistics.mean(two),
        "seed_stdev_1_worker": statistics.stdev(one) if len(one) > 1 else None,
        "seed_stdev_2_workers": statistics.stdev(two) if len(two) > 1 else None,
        "mean_difference": statistics.mean(r["difference"] for r in runs),
        # the runs of a seed share weights at start and the data stream: a paired comparison
        **_paired([r["difference"] for r in runs])}
    if sync_bn:
        summary["mean_difference_sync_bn"] = statistics.mean(r["difference_sync_bn"]
                                                             for r in runs)
        print(f"parity with --sync-bn: mean difference "
              f"{summary['mean_difference_sync_bn']:+.2f} points", flush=True)
    low, high = summary["difference_ci95"]
    print(f"parity: top1 {summary['mean_top1_1_worker']:.2f} % (1 worker) vs "
          f"{summary['mean_top1_2_workers']:.2f} % (2 workers), mean difference "
          f"{summary['mean_difference']:+.2f} points (paired 95% CI {low:+.2f} to {high:+.2f}); "
          f"seed spread (stdev) {summary['seed_stdev_1_worker'] or 0:.2f} / "
          f"{summary['seed_stdev_2_workers'] or 0:.2f}", flush=True)
    return {"runs": runs, **summary}


def _paired(diffs: list[float]) -> dict:
    """The stdev of per-seed differences and a Student-t 95% interval of their mean."""
    from scipy.stats import t

    if len(diffs) < 2:
        return {"difference_stdev": None, "difference_ci95": [math.nan, math.nan]}
    sd = statistics.stdev(diffs)
    half = float(t.ppf(0.975, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    mean = statistics.mean(diffs)
    return {"difference_stdev": sd, "difference_ci95": [mean - half, mean + half]}


def _ray_processes() -> list[str]:
    found = subprocess.run(["pgrep", "-af", "ray::|raylet|gcs_server"], capture_output=True,
                           text=True).stdout.split("\n")
    return [line for line in found if line.strip() and "pgrep" not in line]


def resume(data: Path, work: Path, env: dict[str, str], *, epochs: int) -> dict:
    out = work / "killed"
    args = [MODEL, "--dataset", "folder", "--data-dir", str(data), "--resolution",
            str(RESOLUTION), "--epochs", str(epochs), "--batch-size", str(BATCH), "--threads",
            "1", "--out", str(out)]
    before = set(_ray_processes())
    proc = subprocess.Popen([sys.executable, "-m", "search", "train", *args, "--workers", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads((out / "train.json").read_text())["history"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only, as a crash or the OOM killer would
    proc.wait()
    time.sleep(10)
    left = [p for p in _ray_processes() if p not in before]
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what the kill left of its session
    except ProcessLookupError:
        pass
    killed_at = json.loads((out / "train.json").read_text())
    record, wall, _ = _train([MODEL, "--out", str(out), "--resume", "--workers", "1"], env=env)
    result = {"epochs": epochs, "killed_after_epochs": len(killed_at["history"]),
              "status_left_by_the_kill": killed_at["status"],
              "ray_processes_left_by_the_kill": len(left), "resumed_from":
              record["final"]["resumed_from"], "status": record["status"],
              "history_epochs": [h["epoch"] for h in record["history"]],
              "top1": record["final"]["top1"], "resume_wall_seconds": wall}
    print(f"resume: killed after {result['killed_after_epochs']} epoch(s) (train.json said "
          f"{result['status_left_by_the_kill']!r}; {len(left)} Ray processes outlived the "
          f"driver); resumed with 1 worker from epoch {result['resumed_from']}: "
          f"{result['status']}, epochs {result['history_epochs']}, top1 {result['top1']:.2f} %",
          flush=True)
    return result


def streaming(data: Path, work: Path, env: dict[str, str]) -> dict:
    # first, unmeasured: the in-memory path fills the decode cache with the whole folder
    _train([MODEL, "--dataset", "folder", "--data-dir", str(data), "--resolution",
            str(RESOLUTION), "--epochs", "1", "--batch-size", "64", "--threads", "1",
            "--max-train", "1000", "--out", str(work / "stream-warm")], env=env)
    rows = []
    for max_train in SIZES:
        for path, limit in (("memory", []), ("disk", ["--in-memory-limit", "0.05"])):
            out = work / f"stream-{path}-{max_train}"
            record, wall, peak = _train(
                [MODEL, "--dataset", "folder", "--data-dir", str(data), "--resolution",
                 str(RESOLUTION), "--epochs", "1", "--batch-size", "64", "--threads", "1",
                 "--max-train", str(max_train), *limit, "--out", str(out)], env=env,
                measure=True)
            assert record["images_from"] == path, record["images_from"]
            rows.append({"images_from": path, "max_train": max_train,
                         "data": record["data"], "peak_anon_mib": peak / 2**20,
                         "images_per_second": record["final"]["images_per_second"],
                         "top1": record["final"]["top1"], "wall_seconds": wall})
            print(f"  {path:<6} max-train {max_train}: peak {peak / 2**20:.0f} MiB | "
                  f"{record['final']['images_per_second']:.0f} img/s | {wall:.0f} s",
                  flush=True)
    by = {(r["images_from"], r["max_train"]): r for r in rows}
    small, large = SIZES
    summary = {
        "decoded_mib_per_image": 3 * 73 * 73 / 2**20,
        "peak_growth_mib_memory": by["memory", large]["peak_anon_mib"]
        - by["memory", small]["peak_anon_mib"],
        "peak_growth_mib_disk": by["disk", large]["peak_anon_mib"]
        - by["disk", small]["peak_anon_mib"],
        "throughput_disk_over_memory": by["disk", large]["images_per_second"]
        / by["memory", large]["images_per_second"]}
    print(f"streaming: peak memory grows {summary['peak_growth_mib_memory']:.0f} MiB in memory "
          f"and {summary['peak_growth_mib_disk']:.0f} MiB from disk for {large - small:,} more "
          f"training images ({(large - small) * summary['decoded_mib_per_image']:.0f} MiB "
          f"decoded); from disk at {summary['throughput_disk_over_memory']:.2f}x the "
          "in-memory throughput", flush=True)
    return {"runs": rows, **summary}


def loader(data: Path, env: dict[str, str]) -> dict:
    rows = []
    for n in LOADER_SIZES:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--loader-epoch", str(data), str(n)],
                                cwd=ROOT, env=env)
        memory = _TreeMemory(proc.pid)
        proc.wait()
        peak = memory.stop()
        if proc.returncode != 0:
            raise RuntimeError(f"the loader epoch of {n} images failed ({proc.returncode})")
        rows.append({"train_images": n, "peak_anon_mib": peak / 2**20,
                     "seconds": time.perf_counter() - t0})
        print(f"  loader, {n:,} images: peak {peak / 2**20:.0f} MiB "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    peaks = [r["peak_anon_mib"] for r in rows]
    print(f"loader: peak memory {min(peaks):.0f}-{max(peaks):.0f} MiB for "
          f"{LOADER_SIZES[0]:,}-{LOADER_SIZES[-1]:,} images", flush=True)
    return {"runs": rows, "spread_mib": max(peaks) - min(peaks)}


def _loader_epoch(data: Path, n: int) -> None:
    """One augmented epoch of ``n`` training images through the streaming loader, no network."""
    import torch

    from evaluators.data import load_folder_files
    from evaluators.device import loader_workers
    from evaluators.streaming import FileReader, StreamBatches
    from evaluators.transforms import eval_side

    files = load_folder_files(data, side=eval_side(RESOLUTION), max_train=n)
    reader = FileReader(files.train_files, files.train_y, files.val_files, files.val_y,
                        resolution=RESOLUTION, side=eval_side(RESOLUTION),
                        workers=loader_workers(), device=torch.device("cpu"),
                        channels_last=True)
    batches = StreamBatches(reader, batch_size=64, generator=torch.Generator().manual_seed(0),
                            augment=True, flip=True)
    for _ in batches.epoch():
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cifar", type=Path, default=CIFAR, help="cifar10-jpg.tar.gz")
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " +
                    ", ".join(PARTS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8, help="epochs of the parity runs")
    ap.add_argument("--parity-images", type=int, nargs=2, default=(100, 50),
                    metavar=("TRAIN", "TEST"),
                    help="parity and resume: training and test images a class (more: a test "
                         "that can tell a smaller difference from the noise)")
    ap.add_argument("--sync-bn", action="store_true",
                    help="parity: also 2 workers with BatchNorm over the global batch")
    ap.add_argument("--out", type=Path, help="write the result as JSON here")
    ap.add_argument("--loader-epoch", nargs=2, metavar=("DIR", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.loader_epoch:  # the loader part's subprocess
        _loader_epoch(Path(args.loader_epoch[0]), int(args.loader_epoch[1]))
        return 0
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    info = machine()
    result: dict = {"benchmark": "train_scale", "model": MODEL, "resolution": RESOLUTION,
                    "batch_size": BATCH, "machine": info}
    with tempfile.TemporaryDirectory(prefix="train-scale-") as tmp, benchmark_lock():
        work = Path(tmp)
        env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"),
               "PYTHONPATH": str(ROOT)}
        print(f"extracting {args.cifar} ...", flush=True)
        full = _extract(args.cifar, work / "cifar")
        small = _subset(full, work / "small", train=args.parity_images[0],
                        test=args.parity_images[1])
        t0 = time.perf_counter()
        if "parity" in parts:
            result["parity"] = parity(small, work, env, seeds=args.seeds, epochs=args.epochs,
                                      sync_bn=args.sync_bn)
            result["parity"]["images_a_class"] = list(args.parity_images)
        if "resume" in parts:
            result["resume"] = resume(small, work, env, epochs=3)
        if "streaming" in parts:
            result["streaming"] = streaming(full, work, env)
        if "loader" in parts:
            result["loader"] = loader(full, env)
        result["seconds"] = time.perf_counter() - t0
    result["load_after"] = os.getloadavg()[0]
    if args.out:
        args.out.write_text(json.dumps(_merged(args.out, result, parts), indent=1) + "\n")
    return 0


def _merged(out: Path, result: dict, parts: list[str]) -> dict:
    """The record at ``out`` with the parts just run replaced, each part beside the machine
    and wall time it was measured with: parts measured in separate runs are kept."""
    record = json.loads(out.read_text()) if out.exists() else {}
    record.update({k: result[k] for k in ("benchmark", "model", "resolution", "batch_size")})
    for part in parts:
        record[part] = result[part]
        record[f"{part}_machine"] = {**result["machine"], "load_after": result["load_after"],
                                     "run_seconds": result["seconds"]}
    return record


if __name__ == "__main__":
    sys.exit(main())
