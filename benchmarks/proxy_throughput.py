"""Benchmark: the proxy trainer's training images/second against a plain PyTorch loop, on CPU.

    python benchmarks/proxy_throughput.py [--data-dir DIR] [--steps 20] [--repeats 3]
                                          [--batch-size 128] [--threads N] [--workers 2]
                                          [--quick] [--out FILE]

Both train GhostNet 1.0x (``ghostnet_100``, stem stride 1, 10 classes) at 32x32 on the same
data: the real CIFAR-10 JPEGs when ``--data-dir`` points at an extracted
``cifar10-jpg.tar.gz`` (``DIR/train/<class>/*.jpg``), else a synthetic folder of 32x32 PNGs
written to a temporary folder.

(a) plain: the textbook loop. A ``Dataset`` opens each image file with PIL and applies the
    transforms per sample (random crop with 4-pixel padding, horizontal flip, to-tensor,
    normalise: what torchvision's ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``,
    ``ToTensor``, ``Normalize`` do), a ``DataLoader`` (``--workers`` processes, shuffle,
    drop_last) batches them; fp32, NCHW, SGD + Nesterov, cosine schedule, label smoothing.
(b) plain + channels_last: (a) with model and batches in NHWC, to show how much of (c)'s
    gain is the memory format alone (on this kind of CPU, most of it).
(c) proxy: ``evaluators.proxy.train_proxy`` with the same optimiser settings, on images decoded
    once (the decoding is timed separately: a search pays it once per run, or never with the
    cache).

Each measurement trains ``--steps`` batches after a warm-up. The three are interleaved
``--repeats`` times (the order rotates) because the machine may be shared; the medians are
compared, and so are the best of each (noise only ever slows a run down). Printed and written to ``--out`` (JSON): images/second of each, the ratio, the machine
(CPU model, cores, torch version, threads) and the 1-minute load average before and after.
``--quick`` is a smoke run (under a minute).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from benchmarks._machine import machine
from evaluators.data import IMAGE_SUFFIXES, load_dataset
from evaluators.proxy import ProxyConfig, train_proxy
from evaluators.transforms import IMAGENET_MEAN, IMAGENET_STD
from space import create_architecture

MODEL = "ghostnet_100"
RESOLUTION = 32
# The optimiser settings both loops share (ProxyConfig's defaults).
LR, MOMENTUM, WEIGHT_DECAY, LABEL_SMOOTHING = 0.2, 0.9, 5e-4, 0.1


# ---------------------------------------------------------------------------------------------
# The data: a folder of class sub-folders


def write_synthetic_folder(root: Path, *, classes: int = 10, per_class: int = 300,
                           size: int = RESOLUTION, seed: int = 0) -> Path:
    """``root/train/<class>/*.png``: noisy class-coloured squares (learnable, all distinct)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, 3)
        for j in range(per_class):
            img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{j:05d}.png")
    return root


def list_files(root: Path) -> tuple[list[str], list[int], list[str]]:
    """(files, labels, classes) of ``root/train`` (or ``root``), sorted like evaluators.data."""
    train = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((train / c).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(str(f))
                labels.append(i)
    return files, labels, classes


def subset(files: list[str], labels: list[int], n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    order = list(range(len(files)))
    random.Random(seed).shuffle(order)
    return [files[i] for i in order[:n]], [labels[i] for i in order[:n]]


# ---------------------------------------------------------------------------------------------
# (a) the plain loop


class FileDataset(Dataset):
    """Opens each file with PIL and transforms it per sample, as torchvision's CIFAR recipe
    ``Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), ToTensor(), Normalize()])``."""

    def __init__(self, files: list[str], labels: list[int], *, size: int = RESOLUTION,
                 padding: int = 4) -> None:
        self.files, self.labels, self.size, self.padding = files, labels, size, padding
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as im:
            img = im.convert("RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BILINEAR)
        p = self.padding  # RandomCrop(size, padding=p): zero-pad, then a random window
        padded = Image.new("RGB", (self.size + 2 * p, self.size + 2 * p))
        padded.paste(img, (p, p))
        x0, y0 = random.randint(0, 2 * p), random.randint(0, 2 * p)
        img = padded.crop((x0, y0, x0 + self.size, y0 + self.size))
        if random.random() < 0.5:  # RandomHorizontalFlip
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)  # ToTensor
        x = x.float().div(255)
        return (x - self.mean) / self.std, self.labels[i]  # Normalize


def plain_loop(files: list[str], labels: list[int], num_classes: int, *, steps: int,
               batch_size: int, workers: int, device: str = "cpu", seed: int = 0,
               warmup: int = 0, channels_last: bool = False) -> dict[str, Any]:
    """Train ``steps`` batches the textbook way; images/second over the timed steps, after
    ``warmup`` untimed ones (so the DataLoader's worker start-up is not counted)."""
    torch.manual_seed(seed)
    random.seed(seed)
    arch = dataclasses.replace(create_architecture(MODEL), num_classes=num_classes)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = arch.build(stem_stride=1).to(device, memory_format=memory_format).train()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True,
                          weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps + warmup)
    loader = DataLoader(FileDataset(files, labels), batch_size=batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, pin_memory=device != "cpu",
                        persistent_workers=False)
    done, running, start = 0, 0.0, None
    for xb, yb in loader:
        if done == warmup:
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(xb), yb, label_smoothing=LABEL_SMOOTHING)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()  # the textbook running loss (a sync per step on a GPU)
        done += 1
        if done == warmup + steps:
            break
    if device != "cpu":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if done < warmup + steps:
        raise SystemExit(f"plain loop: only {done} batches in the data; need {warmup + steps}")
    return {"images_per_second": steps * batch_size / seconds, "seconds": seconds,
            "steps": steps, "mean_loss": running / done}


# ---------------------------------------------------------------------------------------------
# Machine


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="extracted cifar10-jpg.tar.gz (or any "
                        "folder with train/<class>/ images); default: synthetic PNGs")
    parser.add_argument("--steps", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch threads for both loops")
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader worker processes of the plain loop (the tutorials' 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 steps, 2 repeats")
    parser.add_argument("--out", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 5, 2
    torch.set_num_threads(args.threads)
    load_before = load_average()
    n = args.steps * args.batch_size
    warmup = 2

    with tempfile.TemporaryDirectory(prefix="ghostnas-bench-") as tmp:
        if args.data_dir is not None:
            root, source = args.data_dir, f"folder {args.data_dir}"
        else:
            per_class = (n + warmup * args.batch_size) // 10 + 50
            root, source = write_synthetic_folder(Path(tmp), per_class=per_class), "synthetic PNGs"
        files, labels, classes = list_files(root)
        files, labels = subset(files, labels, n + warmup * args.batch_size)

        t0 = time.perf_counter()
        data = load_dataset("folder", data_dir=root, max_train=n, max_val=256,
                            image_size=RESOLUTION)
        decode_seconds = time.perf_counter() - t0
        config = ProxyConfig(epochs=1, batch_size=args.batch_size, resolution=RESOLUTION,
                             stem_stride=1, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY,
                             label_smoothing=LABEL_SMOOTHING, threads=args.threads,
                             device="cpu")
        arch = create_architecture(MODEL)
        print(f"{MODEL} at {RESOLUTION}x{RESOLUTION}, stem stride 1, batch {args.batch_size}, "
              f"{args.threads} threads; data: {source} ({data.describe()}; decoded in "
              f"{decode_seconds:.1f}s)", flush=True)

        # Warm-up (not timed): first use of the optimiser, oneDNN's kernels, worker start-up.
        plain_loop(files, labels, len(classes), steps=1, batch_size=args.batch_size,
                   workers=args.workers, warmup=1)
        warm = load_dataset("folder", data_dir=root, max_train=2 * args.batch_size, max_val=64)
        train_proxy(arch, warm, config)

        runs: dict[str, list[float]] = {"plain": [], "plain_channels_last": [], "proxy": []}
        proxy_wall = []
        order = list(runs)
        for r in range(args.repeats):
            for which in order[r % 3:] + order[:r % 3]:  # rotate: no variant always goes first
                if which == "proxy":
                    res = train_proxy(arch, data, config)
                    if res.status != "finished":
                        raise SystemExit(f"train_proxy: {res.status} {res.error}")
                    runs[which].append(res.images_per_second)
                    proxy_wall.append(n / res.wall_seconds)
                else:
                    runs[which].append(plain_loop(
                        files, labels, len(classes), steps=args.steps, batch_size=args.batch_size,
                        workers=args.workers, warmup=warmup, seed=r,
                        channels_last=which == "plain_channels_last")["images_per_second"])
                print(f"  repeat {r + 1}: {which:19s} {runs[which][-1]:7.1f} img/s", flush=True)

    plain, plain_cl, proxy = runs["plain"], runs["plain_channels_last"], runs["proxy"]
    result = {
        "benchmark": "proxy_throughput",
        "model": MODEL, "resolution": RESOLUTION, "stem_stride": 1,
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "data": source, "plain_workers": args.workers,
        "plain_images_per_second": plain, "plain_channels_last_images_per_second": plain_cl,
        "proxy_images_per_second": proxy,
        "proxy_end_to_end_images_per_second": proxy_wall,
        "plain_median": statistics.median(plain),
        "plain_channels_last_median": statistics.median(plain_cl),
        "proxy_median": statistics.median(proxy),
        "ratio": statistics.median(proxy) / statistics.median(plain),
        # Noise on a shared machine only ever slows a run down, so the best of the repeats is
        # the least disturbed figure of each; compare these when the medians disagree.
        "plain_best": max(plain), "plain_channels_last_best": max(plain_cl),
        "proxy_best": max(proxy), "ratio_of_best": max(proxy) / max(plain),
        "pair_ratios": [p / q for p, q in zip(proxy, plain, strict=True)],
        "decode_seconds": decode_seconds,
        "machine": machine(), "load_before": load_before, "load_after": load_average(),
    }
    print(f"plain DataLoader loop: {result['plain_median']:.1f} img/s (median of {len(plain)}); "
          f"train_proxy: {result['proxy_median']:.1f} img/s (training; "
          f"{statistics.median(proxy_wall):.1f} with setup and evaluation); "
          f"ratio {result['ratio']:.2f}x")
    print(f"plain loop with channels_last: {result['plain_channels_last_median']:.1f} img/s "
          f"(proxy / it: {result['proxy_median'] / result['plain_channels_last_median']:.2f}x)")
    print(f"best of {args.repeats}: plain {max(plain):.1f}, plain+channels_last {max(plain_cl):.1f}, "
          f"proxy {max(proxy):.1f} img/s; ratio {result['ratio_of_best']:.2f}x "
          f"({max(proxy) / max(plain_cl):.2f}x over plain+channels_last)")
    print(f"machine: {result['machine']}; load average {load_before} -> {result['load_after']}")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
