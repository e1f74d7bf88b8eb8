"""``python -m search latency-table --device cpu|cuda --out FILE``: build a latency lookup table.

Measures, on this machine, the parts (stem, blocks, tail) of the registered reference models and
of ``--archs`` architectures sampled from the search space, and those networks whole for the
calibration; then ``--holdout`` further sampled networks whole only, for the self-check that is
printed at the end (predicted vs measured on networks whose parts are not in the table, as a
search meets them). See evaluators/latency.py for what is measured and how.
"""

from __future__ import annotations

import argparse
import sys
import time

from search.settings import seed_arg

MAX_ARCHS = 500  # beyond this the file outgrows the 4 MiB that a table file may hold


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="the device to measure on; the table is valid for this device only")
    p.add_argument("--out", required=True, metavar="FILE", help="the table's JSON file")
    p.add_argument("--archs", type=int, default=50, metavar="N",
                   help="sampled architectures whose parts are measured (the reference models "
                        "are always added)")
    p.add_argument("--holdout", type=int, default=None, metavar="M",
                   help="further sampled architectures measured whole for the self-check "
                        "(default: N/4, at least 2)")
    p.add_argument("--threads", type=int, default=1, metavar="T",
                   help="intra-op threads (torch.set_num_threads) while measuring")
    p.add_argument("--batch", type=int, default=1, metavar="B",
                   help="images per timed inference (the deployment batch size)")
    p.add_argument("--resolution", type=int, default=224, metavar="R",
                   help="input side in pixels (the deployment resolution)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                   help="weights and inputs of the timed networks")
    p.add_argument("--seed", type=seed_arg, default=0, metavar="S",
                   help="seed of the sampled architectures")
    p.add_argument("--space", metavar="FILE", default=None,
                   help="a search-space JSON file (default: the built-in space)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 3 timed runs per measurement; fast, and too noisy to use")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class _ProgressLine:
    """One status line on stderr: redrawn in place on a terminal, else every 10 s."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, p) -> None:
        now = time.monotonic()
        finished = p.done == p.total
        if not self.tty and not finished and now - self.last < 10 and p.done:
            return
        self.last = now
        eta = "ETA --" if p.eta_s is None else f"ETA {_duration(p.eta_s)}"
        line = (f"latency-table: parts {p.parts_done}/{p.parts_total}, networks "
                f"{p.networks_done}/{p.networks_total} | elapsed {_duration(p.elapsed_s)} | {eta}")
        if self.tty:
            sys.stderr.write("\r" + line.ljust(79) + ("\n" if finished else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    import random

    import torch

    from evaluators.latency import LatencyError, TableSettings, build_table
    from results.runfolder import check_output_file, probe_writable
    from space import UserError, create_architecture, list_models
    from space.search_space import load_space

    out = check_output_file(args.out, force=args.force, example="table.json")
    probe_writable(out.parent, option="--out")  # before minutes of measuring, not after
    if not 1 <= args.archs <= MAX_ARCHS:
        raise UserError(f"--archs: got {args.archs}, expected 1 to {MAX_ARCHS}")
    holdout = max(2, args.archs // 4) if args.holdout is None else args.holdout
    if not 0 <= holdout <= MAX_ARCHS:
        raise UserError(f"--holdout: got {holdout}, expected 0 to {MAX_ARCHS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device cuda: CUDA is not available to this PyTorch "
                        f"({torch.__version__}); use --device cpu, or install a CUDA build")
    try:
        settings = TableSettings.here(device=args.device, threads=args.threads,
                                      batch=args.batch, dtype=args.dtype,
                                      resolution=args.resolution)
    except LatencyError as exc:  # "threads: got 0, ..." -> "--threads: got 0, ..."
        raise UserError(f"--{exc}") from None
    space = load_space(args.space)

    rng = random.Random(args.seed)
    refs = list_models()
    archs = [create_architecture(n) for n in refs] + [space.sample(rng) for _ in range(args.archs)]
    held = [space.sample(rng) for _ in range(holdout)]
    names = refs + [f"sample{i}" for i in range(args.archs)] + [f"holdout{i}"
                                                                 for i in range(holdout)]
    timing = {"warmup": 1, "repeats": 3} if args.quick else {}
    print(f"measuring on {settings.describe()}", flush=True)
    table = build_table(archs, holdout=held, names=names, device=args.device,
                        threads=args.threads, batch=args.batch, dtype=args.dtype,
                        resolution=args.resolution, progress=_ProgressLine(), **timing)
    table.save(out)

    cal = table.calibration
    print(f"wrote {out}: {len(table.entries)} parts from {len(archs)} networks "
          f"({len(refs)} references, {args.archs} sampled)")
    print(f"calibration: predicted = {cal.scale:.3f} x sum of parts {cal.offset_ms:+.3f} ms "
          f"(fitted on {cal.networks} whole networks)")
    for role, label in (("fit", "in-sample (parts in the table)"),
                        ("holdout", "held out (parts mostly from the fallback model)")):
        check = table.self_check(role)
        if check is None:
            print(f"self-check {label}: no networks")
            continue
        print(f"self-check {label}: {check['networks']} networks, "
              f"{check['within_10pct']:.0%} within +-10%, median |error| "
              f"{check['median_abs_rel_err']:.1%}, max {check['max_abs_rel_err']:.1%}, "
              f"{check['fallback_part_share']:.0%} of parts by fallback")
    if args.quick:
        print("--quick: 3 timed runs per measurement; rebuild without --quick for a real table")
    return 0
