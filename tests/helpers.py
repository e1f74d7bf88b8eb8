"""Test helpers shared by the test packages, in one place: architectures, data files in their
real formats, run folders, the CLI's one-line errors and the CLI as many processes, and
processes and sockets from /proc."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluators.flops import count
from results.runfolder import RunFolder
from search.cli import main
from space import Architecture, Block, create_architecture

ROOT = Path(__file__).resolve().parents[1]

# -- architectures ----------------------------------------------------------------------------

# Three small stages at width 0.5: a fraction of a second per epoch on digits; shared by the
# proxy and from-scratch trainer tests.
SMALL_ARCH = Architecture(stages=(
    (Block(k=3, exp=16, out=16, se=False),),
    (Block(k=3, exp=48, out=24, se=False, stride=2),),
    (Block(k=5, exp=72, out=40, se=True, stride=2), Block(k=3, exp=96, out=40, se=False, s=3)),
), width=0.5, head=128)


def random_architecture(rng: random.Random, *, max_width: float = 1.4) -> Architecture:
    """An arbitrary valid GhostNet table (not limited to any search space): mixed s, d, k, SE,
    strides, odd channel counts, 1-6 stages."""
    stages = []
    for _ in range(rng.randint(1, 6)):
        out = rng.randint(3, 200)
        blocks = []
        for j in range(rng.randint(1, 4)):
            blocks.append(Block(
                k=rng.choice([1, 3, 5, 7]), exp=rng.randint(4, 700), out=out,
                se=rng.random() < 0.4, s=rng.choice([2, 3, 4, 5]), d=rng.choice([1, 3, 5, 7]),
                stride=2 if (j == 0 and rng.random() < 0.6) else 1))
        stages.append(tuple(blocks))
    return Architecture(stages=tuple(stages), width=round(rng.uniform(0.25, max_width), 2),
                        stem=rng.choice([8, 16, 24]), head=rng.choice([320, 1280]),
                        num_classes=rng.choice([10, 100, 1000]),
                        dropout=rng.choice([0.0, 0.2, 0.5]))


# -- data files in their real formats ----------------------------------------------------------


def py2_pickle(obj: object) -> bytes:
    """``obj`` as Python 2's cPickle (protocol 2) wrote the original CIFAR files: str as
    SHORT_BINSTRING/BINSTRING, arrays via ``numpy.core.multiarray._reconstruct``."""
    out = bytearray(b"\x80\x02")

    def w(o: object) -> None:
        if o is None:
            out.extend(b"N")
        elif isinstance(o, bool):
            out.extend(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b"K" + bytes([o]))
            elif 0 <= o < 65536:
                out.extend(b"M" + struct.pack("<H", o))
            else:
                out.extend(b"J" + struct.pack("<i", o))
        elif isinstance(o, bytes):
            out.extend(b"U" + bytes([len(o)]) if len(o) < 256 else b"T" + struct.pack("<I", len(o)))
            out.extend(o)
        elif isinstance(o, tuple):
            out.extend(b"(")
            for item in o:
                w(item)
            out.extend(b"t")
        elif isinstance(o, list):
            out.extend(b"](")
            for item in o:
                w(item)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                w(k)
                w(v)
            out.extend(b"u")
        elif isinstance(o, np.ndarray):
            assert o.dtype == np.uint8
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n")
            w((0,))
            w(b"b")
            out.extend(b"tR(K\x01")
            w(tuple(o.shape))
            out.extend(b"cnumpy\ndtype\n")
            w((b"u1", 0, 1))
            out.extend(b"R")
            w((3, b"|", None, None, None, -1, -1, 0))
            out.extend(b"b")
            w(False)
            w(o.tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    w(obj)
    return bytes(out + b".")

def _dump(path: Path, obj: dict, py2: bool) -> None:
    path.write_bytes(py2_pickle(obj) if py2 else pickle.dumps(obj, protocol=5))

def write_cifar10(root: Path, *, per_batch: int = 20, n_test: int = 20, py2: bool = True,
                  seed: int = 0) -> Path:
    """A CIFAR-10 folder as in cifar-10-python.tar.gz: ``root/cifar-10-batches-py/...``; random
    (so unique) images, labels cycling over the 10 classes."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        n = n_test if name == "test_batch" else per_batch
        _dump(folder / name, {
            b"batch_label": f"batch {i}".encode(),
            b"labels": [(j + i) % 10 for j in range(n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n)],
        }, py2)
    _dump(folder / "batches.meta", {
        b"num_cases_per_batch": per_batch, b"num_vis": 3072,
        b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer",
                                               "dog", "frog", "horse", "ship", "truck")],
    }, py2)
    return folder

def write_cifar100(root: Path, *, n_train: int = 300, n_test: int = 100, py2: bool = True) -> Path:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [j % 100 for j in range(n)]
        _dump(folder / name, {
            b"filenames": [f"{name}_{j}.png".encode() for j in range(n)],
            b"batch_label": f"{name} batch 1 of 1".encode(),
            b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }, py2)
    _dump(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]},
          py2)
    return folder

def write_image_folder(root: Path, *, classes: tuple[str, ...] = ("cat", "dog", "fish"),
                       per_class: int = 12, seed: int = 0) -> Path:
    """Class folders of real PNG and JPEG files of mixed sizes and modes (RGB, grayscale)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for j in range(per_class):
            h, w = (24, 24) if j % 3 else (40, 30)
            if j % 4 == 1:  # grayscale PNG
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(
                    root / c / f"{j:03d}.png")
            elif j % 2:
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    root / c / f"{j:03d}.png")
            else:
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
                    root / c / f"{j:03d}.jpg", quality=90)
    return root


# -- run folders: real architectures and FLOPs, synthetic top-1 ---------------------------------
# top1 is a noisy increasing function of FLOPs, since nothing is trained; every other figure
# (FLOPs, params) is computed from the architecture, so the data is consistent.

REFERENCES = ("ghostnet_050", "ghostnet_100", "ghostnet_130", "mobilenetv3_large_100",
              "mobilenetv3_small_100")
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def candidate_arch(rng: random.Random, i: int):
    """Alternate paper-table GhostNets at random widths and arbitrary random tables."""
    if i % 2 == 0:
        base = create_architecture("ghostnet_050")
        return dataclasses.replace(base, width=round(rng.uniform(0.3, 1.3), 2))
    return dataclasses.replace(random_architecture(rng, max_width=1.2), num_classes=1000)


def proxy_top1(flops: int, rng: random.Random) -> float:
    return round(min(95.0, 20 + 6 * math.log(flops / 1e6) + rng.gauss(0, 2.5)), 2)


def row_for(arch, *, trial_id: str, kind: str = "candidate", name: str = "",
            status: str = "finished", top1: float | None = None, latency: bool = True,
            number: int | None = None, minute: int = 0, rng: random.Random | None = None,
            error: str = "") -> dict[str, Any]:
    rng = rng or random.Random(0)
    flops, params = count(arch)
    failed = status == "failed"
    if top1 is None and not failed:
        top1 = proxy_top1(flops, rng)
    return {
        "trial_id": trial_id, "kind": kind, "name": name, "status": status,
        "top1": None if failed else top1, "loss": None if failed else 1.5,
        "flops": flops, "params": params,
        "latency_ms": round(flops / 2e7 + 1.0, 3) if latency and not failed else None,
        "latency_source": "measured cpu (test)" if latency and not failed else "",
        "epochs": 0 if failed else (1 if status == "early_stopped" else 2),
        "seconds": 3.0, "train_seconds": 2.0, "images_per_second": 500.0,
        "error": error or ("RuntimeError: loss is NaN" if failed else ""),
        "arch": json.dumps(arch.to_dict(), separators=(",", ":")),
        "number": number, "finished_at": (T0 + timedelta(minutes=minute)).isoformat(),
    }


def make_run(path: Path, *, n: int = 12, failed: int = 2, early_stopped: int = 0,
             references: bool = True, latency: bool = True, seed: int = 0,
             meta: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Write run.json, trials.csv (candidates c0001.. + references) and curves.csv; return rows."""
    rng = random.Random(seed)
    slots = list(range(n))
    random.Random(seed + 1).shuffle(slots)  # failed/early-stopped trials spread over the run
    rows = []
    for i in range(n):
        status = ("failed" if i < failed else
                  "early_stopped" if i < failed + early_stopped else "finished")
        j = slots[i]
        rows.append(row_for(candidate_arch(rng, i), trial_id=f"c{j + 1:04d}", status=status,
                            latency=latency, number=j, minute=j, rng=rng))
    rows.sort(key=lambda r: r["number"])
    if references:
        for k, name in enumerate(REFERENCES):
            rows.append(row_for(create_architecture(name), trial_id=f"ref-{name}",
                                kind="reference", name=name, latency=latency, minute=n + k,
                                rng=rng))
    folder = RunFolder(path)
    settings = {"dataset": "cifar10-embedded", "epochs": 2, "sampler": "nsga2",
                "objectives": ["top1", "flops"], "budget_flops": 300_000_000, "trials": n + 3,
                "rejected_over_budget": 4, "seed": seed}
    settings.update(meta or {})
    folder.write_meta({k: v for k, v in settings.items() if v is not None})
    folder.write_trials(rows)
    folder.write_curves([{"trial_id": r["trial_id"], "epoch": e, "top1": r["top1"], "loss": 1.0,
                          "seconds": 1.0} for r in rows if r["status"] != "failed"
                         for e in (1, 2)])
    return rows


# -- the command line ----------------------------------------------------------------------------


def one_line_error(capsys, argv, *match, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for m in match:
        assert m in err, (m, err)
    return err


# -- processes and sockets from /proc (Linux), for tests that start Ray clusters and searches ----
# No psutil (not a dependency) and no ``ss`` (not on every CI image): the kernel's own tables.

def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, session id) of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return int(fields[1]), int(fields[3])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a process started with start_new_session=True has
    its own pid as session id, and its children keep it unless they call setsid)."""
    return [pid for pid in _pids() if (_stat(pid) or (0, -1))[1] == sid
            and not _zombie(pid)]


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None:
            children.setdefault(st[0], []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if not _zombie(pid):
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def kill_session(sid: int, *, timeout: float = 20.0) -> list[int]:
    """SIGKILL every process of session ``sid`` (its process group first); returns those that
    were still alive after ``timeout`` seconds (should be none)."""
    try:
        os.killpg(sid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = session_pids(sid)
        if not left:
            return []
        for pid in left:  # members that moved to another process group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return session_pids(sid)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _address(hex_addr: str) -> str:
    """/proc/net/tcp{,6} address (little-endian hex words) -> text."""
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening(pids: list[int]) -> list[tuple[int, str, int]]:
    """(pid, local address, port) of every listening TCP socket that ``pids`` hold."""
    owner = {inode: pid for pid in pids for inode in _socket_inodes(pid)}
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and inode in owner:  # 0A: LISTEN
                addr, port = local.split(":")
                found.append((owner[inode], _address(addr), int(port, 16)))
    return found


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:7f00:1") or \
        address.startswith("::ffff:127.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the CLI as many processes ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CliProcess:
    """One ``python -m search ARGV`` to run in ``cwd`` with exactly ``env``."""
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]


def run_cli_processes(cases: dict[str, CliProcess], *, workers: int = 2,
                      timeout: float = 300.0) -> dict[str, tuple[subprocess.CompletedProcess, float]]:
    """Each case as its own process, as ``python -m search`` runs it (its exit status, stdout and
    stderr, cwd and environment its own), ``workers`` at a time: (the process, its seconds).

    A fresh interpreter per case would import torch a hundred times; instead one server process
    imports the CLI once, before torch has started a thread, and forks a child per case."""
    with tempfile.TemporaryDirectory() as tmp:
        request = {"workers": workers, "timeout": timeout, "cases": {
            cid: {"argv": list(c.argv), "cwd": c.cwd, "env": c.env,
                  "stdout": f"{tmp}/{i}.out", "stderr": f"{tmp}/{i}.err"}
            for i, (cid, c) in enumerate(cases.items())}}
        server = subprocess.run(
            [sys.executable, "-c", "from tests.helpers import serve_cli_forks; serve_cli_forks()"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, input=json.dumps(request),
            capture_output=True, text=True, timeout=timeout * len(cases) / workers + 120)
        if server.returncode != 0:
            raise RuntimeError(f"the CLI fork server failed: {server.stderr[-3000:]}")
        done = json.loads(server.stdout)
        out = {}
        for cid, c in request["cases"].items():
            proc = subprocess.CompletedProcess(
                ["python", "-m", "search", *c["argv"]], done[cid]["returncode"],
                Path(c["stdout"]).read_text(errors="replace"),
                Path(c["stderr"]).read_text(errors="replace"))
            out[cid] = (proc, done[cid]["seconds"])
        return out


def serve_cli_forks() -> None:
    """The server of :func:`run_cli_processes`: a JSON request on stdin, a JSON answer
    (exit status and seconds per case) on stdout."""
    import search.cli

    search.cli.build_parser()  # every verb's imports, paid once
    request = json.load(sys.stdin)
    waiting = list(request["cases"].items())
    running: dict[int, tuple[str, float]] = {}
    answer: dict[str, dict] = {}
    while waiting or running:
        while waiting and len(running) < request["workers"]:
            cid, case = waiting.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _cli_child(case)
            running[pid] = (cid, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for child, (_, start) in running.items():
                if time.monotonic() - start > request["timeout"]:
                    os.kill(child, signal.SIGKILL)
            time.sleep(0.01)
            continue
        cid, start = running.pop(pid)
        answer[cid] = {"returncode": os.waitstatus_to_exitcode(status),
                       "seconds": time.monotonic() - start}
    json.dump(answer, sys.stdout)


def _cli_child(case: dict) -> None:
    """In a forked child: become ``python -m search ARGV`` in the case's folder and environment,
    and exit as it would (exit handlers run)."""
    import atexit
    import traceback

    from search.cli import main

    code = 1
    try:
        os.chdir(case["cwd"])
        os.environ.clear()
        os.environ.update(case["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY),
                                (1, case["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, case["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            os.dup2(os.open(path, flags, 0o644), fd)
        code = main(case["argv"])
    except SystemExit as exc:  # as the interpreter treats it
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
