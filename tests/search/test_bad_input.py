"""The catalogue of bad inputs, each its own ``python -m search ...`` process.

Every case must: exit with status 2, print exactly one line on stderr that names the problem
(and, where there is one, the fix), print no traceback and nothing on stdout, leave every file
it was given byte-identical (each case gets its own copies of the run folders and files it may
touch), and create no output. Cases of ``run`` must also fail before Ray starts: within seconds,
without creating Ray's temp folder (``RAY_TMPDIR``) or any run folder.

The processes run two at a time in one fixture, forked from one that imported the CLI
(:func:`tests.helpers.run_cli_processes`), so torch is imported once; each case is still its
own test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest

from results.runfolder import RunFolder
from search.settings import RunSettings
from space import create_architecture
from space.io import MAX_JSON_BYTES
from space.search_space import default_space
from tests.helpers import (
    CliProcess,
    free_port,
    make_run,
    run_cli_processes,
    write_cifar10,
    write_image_folder,
)

ROOT = Path(__file__).resolve().parents[2]
RUN_SECONDS = 45  # a 'run' case must fail long before a search could have started
NESTED = "[" * 100_000 + "]" * 100_000  # 200 kB: under the size limit, past the nesting guard
# A tiny run as saved in run.json (the settings a resume is checked against).
SAVED = RunSettings(budget_flops=60_000_000, epochs=1, max_train=200, seed=5, sampler="tpe",
                    measure_latency=False, references=False)
TINY = ["--budget", "60MFLOPs", "--epochs", "1", "--max-train", "200", "--seed", "5",
        "--sampler", "tpe", "--no-latency", "--no-references"]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    # {in}: the shared inputs; {run} {notrun} {oldrun} {badcsv} {existing}: this case's own
    # copy; {out}: a path that must still not exist afterwards; {port}: a closed port;
    # {failed}: the id of a failed trial in {run}
    argv: tuple[str, ...]
    expect: tuple[str, ...]  # in the one line on stderr
    skip: str = ""


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def case(id: str, argv: str, *expect: str, skip: str = "") -> Case:
    return Case(id, tuple(argv.split()), expect, skip)


BAD_BUDGETS = [("banana", "'banana'"), ("-5M", "'-5M'"), ("0", "'0'"), ("300MB", "'300MB'"),
               ("nan", "'nan'")]
BUDGET_FIX = "use e.g. 300MFLOPs"
HAS_TRAIN = (ROOT / "search" / "commands" / "train.py").is_file()
NO_TRAIN = "" if HAS_TRAIN else "search/commands/train.py is not built yet"
TRAIN = "train {arch} --dataset digits --epochs 1 --max-train 64 --out {{out}}"
UNKNOWN = "unrecognized arguments: --bogus"

CASES = [
    # -- every verb: a missing required option, an unknown option ------------------------------
    case("run-missing-budget", "run --out {out}", "run: error:", "required: --budget",
         "see 'python -m search run --help'"),
    case("show-missing-arch", "show", "show: error:", "required: ARCH", "show --help"),
    case("report-missing-run-dir", "report", "report: error:", "required: RUN_DIR"),
    case("export-missing-out", "export {run} --best", "export: error:", "required: --out"),
    case("export-missing-which", "export {run} --out {out}", "one of the arguments --trial "
         "--best is required"),
    case("latency-table-missing-out", "latency-table", "latency-table: error:",
         "required: --out"),
    case("space-option-missing-value", "space --budget", "argument --budget: expected one "
         "argument", "space --help"),  # space has no required option
    case("train-missing-out", "train ghostnet_050 --dataset digits --epochs 1",
         "train: error:", "required: --out", skip=NO_TRAIN),
    case("no-such-verb", "bogus", "invalid choice: 'bogus'", "see 'python -m search --help'"),
    *[case(f"{verb.split()[0]}-unknown-option", f"{verb} --bogus", f"{verb.split()[0]}: error:",
           UNKNOWN, f"see 'python -m search {verb.split()[0]} --help'",
           skip=NO_TRAIN if verb.startswith("train") else "")
      for verb in ("run --budget 60MFLOPs --out {out}", "space", "show ghostnet_050",
                   "report {run}", "export {run} --best --out {out}",
                   "latency-table --out {out}", TRAIN.format(arch="ghostnet_050"))],

    # -- budgets ----------------------------------------------------------------------------
    *[case(f"run-budget-{b}", f"run --budget={b} --out {{out}}", f"--budget: cannot read {q}",
           BUDGET_FIX) for b, q in BAD_BUDGETS],
    *[case(f"space-budget-{b}", f"space --budget={b}", f"--budget: cannot read {q}",
           BUDGET_FIX) for b, q in BAD_BUDGETS],
    *[case(f"export-max-flops-{b}", f"export {{run}} --best --max-flops={b} --out {{out}}",
           f"--max-flops: cannot read {q}", BUDGET_FIX) for b, q in BAD_BUDGETS],
    case("space-budget-negative-as-a-separate-word", "space --budget -5M",
         "argument --budget: expected one argument", "'-5M' starts with '-', so it was read "
         "as an option; write --budget=-5M"),
    case("run-budget-below-the-space", "run --budget 1MFLOPs --out {out}",
         "below the cheapest architecture", "raise the budget"),
    case("run-proxy-unknown-for-the-data", "run --budget 300MFLOPs --proxy quick --out {out}",
         "--proxy: got 'quick'; on digits choose one of standard, thorough"),
    case("run-resolution-on-digits", "run --budget 300MFLOPs --resolution 32 --out {out}",
         "--resolution: the digits are 8x8 images"),
    case("run-confirm-negative", "run --budget 300MFLOPs --confirm -1 --out {out}",
         "--confirm", "integer >= 0"),
    case("run-confirm-one-seed", "run --budget 300MFLOPs --confirm 2 --confirm-seeds 1 "
         "--out {out}", "--confirm-seeds", "integer >= 2"),
    case("run-confirm-without-a-test-split", "run --budget 300MFLOPs --confirm 3 --out {out}",
         "--confirm 3: the digits data set has no test split", "cifar10"),

    # -- data folders (before Ray starts) ---------------------------------------------------
    case("run-cifar-without-data-dir", "run --budget 300MFLOPs --dataset cifar10 --out {out}",
         "--dataset cifar10 needs --data-dir PATH"),
    case("run-data-dir-missing", "run --budget 300MFLOPs --dataset cifar10 "
         "--data-dir {in}/no-such-folder --out {out}", "does not exist", "download"),
    case("run-folder-with-one-class", "run --budget 300MFLOPs --dataset folder "
         "--data-dir {in}/one-class --out {out}", "at least 2 class sub-folders", "'cat'"),
    case("run-cifar-truncated-batch", "run --budget 300MFLOPs --dataset cifar10 "
         "--data-dir {in}/cifar-truncated --out {out}", "data_batch_2", "truncated"),

    # -- resources no node has: refused before Ray starts (a trial would wait forever) --------
    case("run-more-cpus-than-the-machine", "run --budget 300MFLOPs --cpus-per-trial 4096 "
         "--out {out}", "--cpus-per-trial 4096 --gpus-per-trial 0: no node of this machine "
         "has that much", "lower them"),
    case("run-a-gpu-on-a-cpu-machine", "run --budget 300MFLOPs --gpus-per-trial 1 --out {out}",
         "--gpus-per-trial 1: no node of this machine has that much", "0 GPUs",
         skip="this machine has a GPU" if _has_cuda() else ""),

    # -- architecture files (show: every kind; train: the four of issue 8) ---------------------
    *[case(f"{verb}-arch-{name}", (TRAIN if verb == "train" else "show {arch}").format(
        arch=f"{{in}}/arch-{name}.json"), *expect, skip=NO_TRAIN if verb == "train" else "")
      for verb in ("show", "train")
      for name, expect in (
          ("truncated", ("arch-truncated.json", "is not valid JSON", "line 1 column")),
          ("corrupt", ("arch-corrupt.json", "is not valid JSON")),
          ("oversized", ("arch-oversized.json", "larger than 4096 KiB")),
          ("nested", ("arch-nested.json", "nested too deeply")),
          ("not-an-object", ("arch-not-an-object.json", "expected a JSON object")),
          ("rule-broken", ("arch-rule-broken.json", "stages[0][0].k: got 4",
                           "expected an odd integer")),
          ("unknown-key", ("arch-unknown-key.json", "unknown key 'colour'", "allowed keys")),
      ) if verb == "show" or name in ("truncated", "corrupt", "oversized", "rule-broken")],

    # -- space files --------------------------------------------------------------------------
    *[case(f"{verb}-space-{name}", f"{cmd} --space {{in}}/space-{name}.json", *expect)
      for verb, cmd in (("space", "space"), ("run", "run --budget 300MFLOPs --out {out}"))
      for name, expect in (
          ("impossible-depth", ("space-impossible-depth.json", "stages[1].depth: choice 9 "
                                "needs 9 entries in stages[1].blocks")),
          ("empty-choices", ("space-empty-choices.json", "width: got []",
                             "a non-empty list of distinct choices")),
      )],
    case("space-space-oversized", "space --space {in}/space-oversized.json",
         "space file", "larger than 4096 KiB"),
    case("space-space-nested", "space --space {in}/space-nested.json", "space file",
         "nested too deeply"),

    # -- latency tables -----------------------------------------------------------------------
    case("run-latency-table-other-resolution", "run --budget 300MFLOPs --latency-table "
         "{in}/table-32px.json --out {out}", "built for resolution=32",
         "resolution=224 was asked for", "python -m search latency-table"),
    case("run-latency-table-oversized", "run --budget 300MFLOPs --latency-table "
         "{in}/table-oversized.json --out {out}", "latency table file", "larger than 4096 KiB"),
    case("run-latency-table-nested", "run --budget 300MFLOPs --latency-table "
         "{in}/table-nested.json --out {out}", "latency table file", "nested too deeply"),

    # -- run folders --------------------------------------------------------------------------
    case("report-not-a-run", "report {notrun}", "not a GhostNAS run folder (no run.json)",
         "pass the --out folder"),
    case("export-not-a-run", "export {notrun} --best --out {out}",
         "not a GhostNAS run folder"),
    case("report-missing-folder", "report {in}/no-such-run", "does not exist"),
    case("report-damaged-trials-csv", "report {badcsv}", "trials.csv: malformed row",
         "field larger than field limit"),
    case("run-resume-binary-curves-csv", "run " + " ".join(TINY) + " --out {bincurves}",
         "curves.csv: not UTF-8 text", "restore it, or pass a new --out"),
    case("report-binary-curves-csv", "report {bincurves}", "curves.csv: not UTF-8 text"),
    case("export-utf16-trials-csv", "export {u16trials} --best --out {out}",
         "trials.csv: not UTF-8 text", "the file is damaged or not written by GhostNAS"),
    case("report-trials-csv-is-a-folder", "report {dirtrials}", "trials.csv is not a file",
         "restore the file, or pass a new --out"),
    case("export-infinite-top1", "export {inftop1} --best --out {out}",
         "trials.csv: malformed row 2 (top1 'inf' is not 0-100 (percent))"),
    case("export-failed-trial", "export {run} --trial {failed} --out {out}",
         "failed (RuntimeError: loss is NaN)", "choose a finished trial or use --best"),
    case("export-would-overwrite", "export {run} --best --out {existing}", "already exists",
         "pass --force to overwrite it"),
    case("run-out-is-not-a-run", "run --budget 60MFLOPs --out {notrun}",
         "exists and is not a GhostNAS run folder", "pass an empty or new folder"),
    case("run-out-is-a-file", "run --budget 60MFLOPs --out {existing}", "is a file",
         "pass a folder"),
    case("run-resume-not-a-run", "run --budget 60MFLOPs --resume --out {out}",
         "--resume:", "is not a run folder to continue"),
    case("run-resume-other-epochs", "run " + " ".join(TINY).replace("--epochs 1", "--epochs 2")
         + " --resume --out {run}", "started with --epochs 1 (now 2)",
         "continue it with the same setting, or pass a new --out"),
    case("run-resume-without-saved-settings", "run " + " ".join(TINY) + " --out {oldrun}",
         "no saved run settings", "pass a new --out"),
    case("report-out-is-the-runs-own-table", "report {run} --out {run}/trials.csv",
         "would replace a file of the run itself", "drop --out"),
    case("export-force-over-the-runs-settings", "export {run} --best --out {run}/run.json "
         "--force", "would replace a file of the run itself"),
    case("report-out-empty", "report {run} --out=", "--out: got an empty path"),
    case("export-out-empty", "export {run} --best --out=", "--out: got an empty path",
         "pass a file name"),
    case("report-out-would-overwrite", "report {run} --out {existing}", "already exists",
         "pass --force to overwrite it"),
    case("report-out-is-a-folder", "report {run} --out {notrun}", "is a folder",
         "pass a file name in it"),
    case("run-out-empty", "run --budget 60MFLOPs --out=", "--out: got an empty path"),
    case("run-out-below-a-file", "run --budget 60MFLOPs --out {existing}/run",
         "--out: cannot write in", "not a folder", "pass a path in a folder you can write"),
    case("latency-table-out-below-a-file", "latency-table --out {existing}/t.json",
         "--out:", "is a file, not a folder"),
    case("report-run-dir-is-a-file", "report {existing}", "is a file, not a run folder"),
    case("latency-table-out-is-a-folder", "latency-table --out {notrun}", "is a folder",
         "pass a file name in it"),
    case("latency-table-out-empty", "latency-table --out=", "--out: got an empty path"),
    *[case(f"latency-table-{option}-huge", f"latency-table --out {{out}} --{option} {value}",
           f"--{option}: got {value}, expected at most", why)
      for option, value, why in (("threads", 99999, "the CPUs this process may use"),
                                 ("batch", 100000, "a deployment batch"),
                                 ("resolution", 99999, "a deployment input side"))],
    case("train-threads-huge", TRAIN.format(arch="ghostnet_050") + " --threads 99999",
         "--threads: got 99999, expected at most", "the CPUs this process may use",
         skip=NO_TRAIN),
    case("export-out-below-a-file", "export {run} --best --out {existing}/a.json",
         "is a file, not a folder"),
    *[case(f"{verb.split()[0]}-seed-{name}", f"{verb} --seed {seed}", "argument --seed: got "
           f"'{seed}', expected an integer from 0 to 4294967295",
           skip=NO_TRAIN if verb.startswith("train") else "")
      for verb in ("run --budget 60MFLOPs --out {out}", "space", "latency-table --out {out}",
                   TRAIN.format(arch="ghostnet_050"))
      for name, seed in (("too-big", "4294967296"), ("negative", "-1"))],
    case("run-address-empty", "run --budget 60MFLOPs --address= --out {out}",
         "--address: got an empty value", "leave --address out"),
    case("run-address-without-cluster", "run --budget 60MFLOPs --address 127.0.0.1:{port} "
         "--out {out}", "no Ray cluster answers there", "ray start --head"),
]


def _digest(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``path`` (or of ``path`` itself)."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _write_inputs(d: Path) -> None:
    d.mkdir()
    good = create_architecture("ghostnet_050").to_dict()
    text = json.dumps(good)
    (d / "arch-truncated.json").write_text(text[:len(text) // 2])
    (d / "arch-corrupt.json").write_bytes(b"GhostNet, 0.5x, please\n")
    (d / "arch-oversized.json").write_text('{"width": 0.5, "pad": "' + " " * MAX_JSON_BYTES
                                           + '"}')
    (d / "arch-nested.json").write_text(NESTED)
    (d / "arch-not-an-object.json").write_text(json.dumps([good]))
    broken = json.loads(text)
    broken["stages"][0][0]["k"] = 4
    (d / "arch-rule-broken.json").write_text(json.dumps(broken))
    (d / "arch-unknown-key.json").write_text(json.dumps({**good, "colour": "blue"}))

    space = default_space().to_dict()
    deep = json.loads(json.dumps(space))
    deep["stages"][1]["depth"] = [9]
    (d / "space-impossible-depth.json").write_text(json.dumps(deep))
    (d / "space-empty-choices.json").write_text(json.dumps({**space, "width": []}))
    (d / "space-oversized.json").write_text(" " * (MAX_JSON_BYTES + 1))
    (d / "space-nested.json").write_text(NESTED)

    from evaluators.latency import build_table

    rng = random.Random(0)
    table = build_table([default_space().sample(rng), create_architecture("ghostnet_050")],
                        resolution=32, warmup=1, repeats=2)
    table.save(d / "table-32px.json")
    (d / "table-oversized.json").write_text(" " * (MAX_JSON_BYTES + 1))
    (d / "table-nested.json").write_text(NESTED)

    write_image_folder(d / "one-class", classes=("cat",), per_class=4)
    folder = write_cifar10(d / "cifar-truncated")
    good_batch = (folder / "data_batch_2").read_bytes()
    (folder / "data_batch_2").write_bytes(good_batch[:len(good_batch) // 2])


def _write_private(d: Path) -> str:
    """Templates of what a case may be given to write into (copied for each case); returns
    the id of a failed trial in the run folder."""
    run = d / "run"
    make_run(run, n=6, failed=2, references=False)  # c0001/c0002/... ; some failed
    meta = RunFolder(run).read_meta()
    RunFolder(run).write_meta({**meta, "settings": SAVED.to_dict()})
    failed = next(r["trial_id"] for r in RunFolder(run).read_trials()
                  if r["status"] == "failed")
    make_run(d / "oldrun", n=3, failed=0, references=False)  # run.json without settings
    (d / "notrun").mkdir()
    (d / "notrun" / "notes.txt").write_text("holiday photos, not a search\n")
    badcsv = d / "badcsv"
    make_run(badcsv, n=3, failed=0, references=False)
    lines = (badcsv / "trials.csv").read_text().splitlines()
    lines[1] = lines[1].replace(",candidate,", ",candidate," + "x" * 200_000, 1)
    (badcsv / "trials.csv").write_text("\n".join(lines) + "\n")
    (d / "existing").write_text("my own notes; not to be overwritten\n")
    shutil.copytree(run, d / "bincurves")  # a resumable run whose curves.csv is binary junk
    (d / "bincurves" / "curves.csv").write_bytes(bytes(range(256)) * 8)
    make_run(d / "u16trials", n=3, failed=0, references=False)
    text = (d / "u16trials" / "trials.csv").read_text()
    (d / "u16trials" / "trials.csv").write_text(text, encoding="utf-16")
    make_run(d / "dirtrials", n=3, failed=0, references=False)
    (d / "dirtrials" / "trials.csv").unlink()
    (d / "dirtrials" / "trials.csv").mkdir()
    make_run(d / "inftop1", n=3, failed=0, references=False)
    lines = (d / "inftop1" / "trials.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("top1")] = "inf"
    lines[2] = ",".join(cells)
    (d / "inftop1" / "trials.csv").write_text("\n".join(lines) + "\n")
    return failed


PRIVATE = ("run", "notrun", "oldrun", "badcsv", "existing", "bincurves", "u16trials",
           "dirtrials", "inftop1")


def _prepare_case(c: Case, inputs: Path, private: Path, failed: str, home: Path) -> dict:
    """The case's own folder (its copies of the private inputs) and its process."""
    home.mkdir()
    names = {"in": str(inputs), "out": str(home / "out"), "port": str(free_port()),
             "failed": failed}
    for name in PRIVATE:
        if any(f"{{{name}}}" in a for a in c.argv):
            src = private / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, home / name)
            names[name] = str(home / name)
    argv = tuple(a.format(**names) for a in c.argv)
    # cwd: the case's own folder, so that nothing can land in the repository
    env = {**os.environ, "RAY_TMPDIR": str(home / "ray-tmp"),
           "GHOSTNAS_LATENCY_LOCK": str(home / "latency.lock"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get(
               "PYTHONPATH")])])}
    env.pop("RAY_ADDRESS", None)
    return {"process": CliProcess(argv, str(home), env), "before": _digest(home), "home": home,
            "argv": argv}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad") / "inputs"
    old = os.environ.get("GHOSTNAS_LATENCY_LOCK")
    os.environ["GHOSTNAS_LATENCY_LOCK"] = str(d.parent / "latency.lock")
    try:
        _write_inputs(d)
    finally:
        if old is None:
            os.environ.pop("GHOSTNAS_LATENCY_LOCK")
        else:
            os.environ["GHOSTNAS_LATENCY_LOCK"] = old
    return d


@pytest.fixture(scope="module")
def results(inputs, tmp_path_factory):
    """Every case that is not skipped, run two at a time; id -> what happened."""
    private = tmp_path_factory.mktemp("private")
    failed = _write_private(private)
    shared_before = _digest(inputs)
    homes = tmp_path_factory.mktemp("cases")
    out = {c.id: _prepare_case(c, inputs, private, failed, homes / c.id)
           for c in CASES if not c.skip}
    done = run_cli_processes({cid: r["process"] for cid, r in out.items()})
    for cid, r in out.items():
        r["proc"], r["seconds"] = done[cid]
        r["after"] = _digest(r["home"])
    assert _digest(inputs) == shared_before, "a case changed the shared input files"
    return out


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(c: Case, results):
    if c.skip:
        pytest.skip(c.skip)
    r = results[c.id]
    proc = r["proc"]
    where = f"{' '.join(r['argv'])}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    assert proc.returncode == 2, where
    assert "Traceback" not in proc.stderr, where
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), where
    assert proc.stdout == "", where
    for text in c.expect:
        assert text in lines[0], (text, where)
    assert r["after"] == r["before"], "a file the command was given changed"
    assert not (r["home"] / "out").exists(), "the command created its output"
    if c.argv[0] == "run":
        assert r["seconds"] < RUN_SECONDS, r["seconds"]
        assert not (r["home"] / "ray-tmp").exists(), "Ray was started"
