"""Benchmark on one GPU: proxy-trainer images/second against a plain loop, and trials sharing it.

    python benchmarks/gpu_proxy.py [--data-dir DIR] [--out FILE] [--batch-size 256]
                                   [--trials 1,2,4] [--smoke]

GhostNet 1.0x (``ghostnet_100``) at CIFAR size: 32x32, stem stride 1, 10 classes, batch 256.
Data: the CIFAR-10 JPEGs when ``--data-dir`` points at an extracted ``cifar10-jpg.tar.gz``
(``DIR/train/<class>/*.jpg``) or at the archive itself (extracted to a temporary folder), else a synthetic folder of 32x32 PNGs. It reports (printed, and
JSON to ``--out``):

1. plain: the textbook GPU loop (benchmarks/proxy_throughput.py's: PIL per sample in
   ``DataLoader`` workers, pinned memory, fp32, NCHW, ``loss.item()`` per step); it decodes
   only the batches it trains on;
2. proxy: ``train_proxy`` on ``max_train`` (20,000) decoded images held on the GPU, with its
   default mixed precision (bf16 where supported) and with ``amp="off"`` (fp32, like the plain
   loop), after a warm-up call;
3. sharing: 1, 2 and 4 trials at once on the GPU (separate spawned processes, each with its own
   CUDA context, a warm-up, then a barrier and a fixed number of steps): per-trial and aggregate
   images/second, and the ``--gpus-per-trial`` that gives the highest aggregate.

Every timing brackets the work with ``torch.cuda.synchronize()``. Budget: about 3 minutes on an
H100 (CUDA start-up of 7 processes and JPEG decoding included). ``--smoke`` runs the same code on
the CPU in tiny sizes (a check that the script works, not a measurement).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import queue as queue_module
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks.proxy_throughput import (
    MODEL,
    RESOLUTION,
    list_files,
    machine,
    plain_loop,
    subset,
    write_synthetic_folder,
)
from evaluators.data import ImageData, load_dataset
from evaluators.proxy import ProxyConfig, train_proxy
from space import create_architecture


@dataclasses.dataclass(frozen=True)
class Sizes:
    batch: int
    plain_steps: int  # timed steps of the plain loop (after plain_warmup)
    plain_warmup: int
    max_train: int  # images the trainer holds on the device
    proxy_epochs: int  # epochs of each timed single-trial call
    share_epochs: int  # epochs of each sharing trial (fixed steps: max_train // batch each)
    synthetic_per_class: int


FULL = Sizes(batch=256, plain_steps=60, plain_warmup=5, max_train=20_000, proxy_epochs=2,
             share_epochs=2, synthetic_per_class=2_300)
SMOKE = Sizes(batch=16, plain_steps=2, plain_warmup=1, max_train=64, proxy_epochs=1,
              share_epochs=1, synthetic_per_class=12)


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.strip()
        return out.splitlines()[0] if out else "nvidia-smi: no GPU listed"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi unavailable ({type(exc).__name__})"


def _save_data(data: ImageData, folder: Path) -> Path:
    """The decoded split as .npy files, so each sharing trial loads it in milliseconds."""
    for name in ("train_x", "train_y", "val_x", "val_y"):
        np.save(folder / f"{name}.npy", getattr(data, name).numpy(), allow_pickle=False)
    (folder / "classes.json").write_text(json.dumps(list(data.classes)))
    return folder


def _load_data(folder: Path) -> ImageData:
    arrays = {n: torch.from_numpy(np.load(folder / f"{n}.npy", allow_pickle=False))
              for n in ("train_x", "train_y", "val_x", "val_y")}
    classes = tuple(json.loads((folder / "classes.json").read_text()))
    return ImageData(name="bench", test_x=None, test_y=None, num_classes=len(classes),
                     classes=classes, **arrays)


def _trial(rank: int, data_folder: str, config: ProxyConfig, barrier: Any, queue: Any) -> None:
    """One sharing trial in its own process: warm up, wait for the others, train, report."""
    try:
        data = _load_data(Path(data_folder))
        arch = create_architecture(MODEL)
        small = dataclasses.replace(data, train_x=data.train_x[:4 * config.batch_size],
                                    train_y=data.train_y[:4 * config.batch_size])
        train_proxy(arch, small, dataclasses.replace(config, epochs=1))  # CUDA context, cuDNN
        barrier.wait(timeout=300)
        start = time.time()
        res = train_proxy(arch, data, config)
        end = time.time()
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
        queue.put({"rank": rank, "status": res.status, "error": res.error,
                   "images_per_second": res.images_per_second,
                   "images": res.images_per_second * res.train_seconds,
                   "train_seconds": res.train_seconds, "start": start, "end": end,
                   "peak_memory_mib": peak})
    except BaseException as exc:  # report, never hang the parent
        queue.put({"rank": rank, "status": "crashed", "error": f"{type(exc).__name__}: {exc}"})
        try:
            barrier.abort()
        except Exception:
            pass


def share(k: int, data_folder: Path, config: ProxyConfig) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_trial, args=(i, str(data_folder), config, barrier, queue))
             for i in range(k)]
    for p in procs:
        p.start()
    rows = []
    try:
        for _ in range(k):
            rows.append(queue.get(timeout=300))
    except queue_module.Empty:
        codes = [p.exitcode for p in procs]
        rows.append({"status": "crashed", "error": f"a trial process died or hung (exit codes "
                     f"{codes})"})
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
    bad = [r for r in rows if r["status"] != "finished"]
    if bad:
        return {"trials": k, "error": bad[0]["error"], "rows": rows}
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    images = sum(r["images"] for r in rows)
    return {"trials": k, "per_trial_images_per_second": [r["images_per_second"] for r in rows],
            "aggregate_images_per_second": images / wall,
            "sum_of_trial_images_per_second": sum(r["images_per_second"] for r in rows),
            "wall_seconds": wall, "peak_memory_mib": [r["peak_memory_mib"] for r in rows]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="extracted cifar10-jpg.tar.gz (folder with "
                        "train/<class>/*.jpg) or the .tar.gz itself; default: synthetic PNGs")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    parser.add_argument("--batch-size", type=int, help="default 256 (16 with --smoke)")
    parser.add_argument("--trials", help="trials sharing the GPU (default 1,2,4; 1,2 with --smoke)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1),
                        help="DataLoader workers of the plain loop")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on the CPU: checks that the script runs")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.batch_size:
        sizes = dataclasses.replace(sizes, batch=args.batch_size)
    trials = [int(t) for t in (args.trials or ("1,2" if args.smoke else "1,2,4")).split(",")]
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device visible; use --smoke to check the script on a CPU")
    t_start = time.perf_counter()
    info = {**machine(), "nvidia_smi": gpu_name() if device == "cuda" else "(smoke: cpu)",
            "cuda": torch.version.cuda, "device": device}
    print(f"machine: {info}", flush=True)
    if args.smoke:
        workers, threads = min(args.workers, 2), 1
    else:
        workers, threads = args.workers, None

    with tempfile.TemporaryDirectory(prefix="ghostnas-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        if args.data_dir is not None and args.data_dir.is_file():  # the .tar.gz itself
            with tarfile.open(args.data_dir) as tar:
                tar.extractall(tmp / "extracted", filter="data")
            root, source = tmp / "extracted", f"archive {args.data_dir}"
        elif args.data_dir is not None:
            root, source = args.data_dir, f"folder {args.data_dir}"
        else:
            root = write_synthetic_folder(tmp / "synthetic", per_class=sizes.synthetic_per_class)
            source = "synthetic PNGs"
        files, labels, classes = list_files(root)
        need = (sizes.plain_steps + sizes.plain_warmup) * sizes.batch
        files, labels = subset(files, labels, need)
        t0 = time.perf_counter()
        data = load_dataset("folder", data_dir=root, max_train=sizes.max_train,
                            max_val=min(2_000, sizes.max_train), image_size=RESOLUTION)
        decode_seconds = time.perf_counter() - t0
        data = dataclasses.replace(data, test_x=None, test_y=None)
        print(f"data: {source}: {data.describe()} (decoded in {decode_seconds:.1f}s)", flush=True)

        # 1. the plain loop (decodes only the batches it trains on)
        plain = plain_loop(files, labels, len(classes), steps=sizes.plain_steps,
                           batch_size=sizes.batch, workers=workers, device=device,
                           warmup=sizes.plain_warmup)
        print(f"plain DataLoader loop (fp32, {workers} workers): "
              f"{plain['images_per_second']:.0f} img/s", flush=True)

        # 2. the trainer, one trial
        config = ProxyConfig(epochs=sizes.proxy_epochs, batch_size=sizes.batch,
                             resolution=RESOLUTION, stem_stride=1, device=device,
                             threads=threads)
        arch = create_architecture(MODEL)
        warm = dataclasses.replace(data, train_x=data.train_x[:4 * sizes.batch],
                                   train_y=data.train_y[:4 * sizes.batch])
        proxy: dict[str, Any] = {}
        for amp in ("auto", "off"):
            cfg = dataclasses.replace(config, amp=amp)
            train_proxy(arch, warm, dataclasses.replace(cfg, epochs=1))  # cuDNN autotuning
            res = train_proxy(arch, data, cfg)
            if res.status != "finished":
                raise SystemExit(f"train_proxy ({amp}): {res.status}: {res.error}")
            proxy[amp] = {"images_per_second": res.images_per_second,
                          "train_seconds": res.train_seconds, "wall_seconds": res.wall_seconds,
                          "top1": res.top1}
            print(f"train_proxy (amp={amp}): {res.images_per_second:.0f} img/s training, "
                  f"{res.wall_seconds:.1f}s for the call, top1 {res.top1:.1f}%", flush=True)

        # 3. trials sharing the device (this process's cached blocks given back first)
        if device == "cuda":
            torch.cuda.empty_cache()
        data_folder = _save_data(data, tmp)
        shared = []
        for k in trials:
            cfg = dataclasses.replace(config, epochs=sizes.share_epochs,
                                      threads=max(1, (os.cpu_count() or 1) // k)
                                      if threads is None else threads)
            row = share(k, data_folder, cfg)
            shared.append(row)
            if "error" in row:
                print(f"{k} trial(s) at once: failed: {row['error']}", flush=True)
            else:
                per = ", ".join(f"{v:.0f}" for v in row["per_trial_images_per_second"])
                print(f"{k} trial(s) at once: per trial {per} img/s; aggregate "
                      f"{row['aggregate_images_per_second']:.0f} img/s", flush=True)

    ok = [r for r in shared if "error" not in r]
    best = max(ok, key=lambda r: r["aggregate_images_per_second"]) if ok else None
    result = {
        "benchmark": "gpu_proxy", "smoke": args.smoke, "model": MODEL, "resolution": RESOLUTION,
        "stem_stride": 1, "batch_size": sizes.batch, "data": source,
        "decode_seconds": decode_seconds, "machine": info,
        "plain": {**plain, "workers": workers},
        "proxy": proxy,
        "ratio_vs_plain": proxy["auto"]["images_per_second"] / plain["images_per_second"],
        "ratio_fp32_vs_plain": proxy["off"]["images_per_second"] / plain["images_per_second"],
        "sharing": shared,
        "recommended_gpus_per_trial": None if best is None else 1 / best["trials"],
        "total_seconds": time.perf_counter() - t_start,
    }
    print(f"train_proxy / plain loop: {result['ratio_vs_plain']:.1f}x "
          f"(fp32 vs fp32: {result['ratio_fp32_vs_plain']:.1f}x)")
    if best is not None:
        print(f"highest aggregate with {best['trials']} trial(s) per GPU: --gpus-per-trial "
              f"{result['recommended_gpus_per_trial']:g}")
    print(f"total {result['total_seconds']:.0f}s")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
