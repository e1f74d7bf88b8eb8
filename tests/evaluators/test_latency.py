"""Latency: the measured record, the machine-wide lock, parts, and the lookup table."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evaluators.latency import (
    FEATURES,
    REFERENCE_PART,
    LatencyError,
    LatencyTable,
    LatencyTableError,
    LatencyTableMismatch,
    build_table,
    device_name,
    lock_path,
    measure_latency,
    measurement_lock,
    part_module,
    parts,
    reference_latency,
)
from evaluators.latency.predictor import features, fit_calibration, fit_fallback
from evaluators.latency.timing import time_runs
from space import architecture_from_dict, create_architecture, list_models
from space.io import MAX_JSON_BYTES
from space.search_space import default_space
from tests.helpers import random_architecture

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


@pytest.fixture(autouse=True)
def private_lock(tmp_path_factory, monkeypatch):
    """A lock file of the tests' own, so they never wait for (or block) a real measurement."""
    monkeypatch.setenv("GHOSTNAS_LATENCY_LOCK", str(tmp_path_factory.getbasetemp() / "lat.lock"))


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    """Two small sampled networks and MobileNetV3-Small at 32 px, 2 timed runs per measurement;
    one more network measured whole only (held out)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GHOSTNAS_LATENCY_LOCK", str(tmp_path_factory.getbasetemp() / "lat.lock"))
    rng = random.Random(5)
    space = default_space()
    archs = [space.sample(rng), space.sample(rng), create_architecture("mobilenetv3_small_100")]
    held = [space.sample(rng)]
    table = build_table(archs, holdout=held, resolution=32, warmup=1, repeats=2)
    mp.undo()
    return table, archs, held


# -- measurement -------------------------------------------------------------------------------


def test_measurement_record_is_sane_and_threads_restored():
    torch.set_num_threads(2)
    try:
        rec = measure_latency(create_architecture("ghostnet_050"), resolution=64, warmup=1,
                              repeats=5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert rec.latency_ms > 0 and rec.min_ms <= rec.latency_ms <= rec.p90_ms
    assert rec.iqr_ms >= 0 and rec.rel_ci >= 0 and rec.rel_iqr >= 0
    assert (rec.repeats, rec.warmup, rec.threads, rec.batch) == (5, 1, 1, 1)
    assert (rec.device, rec.dtype, rec.resolution, rec.method) == ("cpu", "float32", 64,
                                                                   "measured")
    assert rec.device_name == device_name("cpu") and rec.device_name
    assert rec.torch_version == torch.__version__
    assert rec.locked and not rec.converged  # fixed repeats never claim convergence
    assert rec.cpu_ms is not None and rec.cpu_ms > 0
    assert "measured on" in rec.source and json.dumps(rec.to_dict())


def test_cpu_measurement_is_drift_corrected_and_keeps_the_raw_median():
    arch = create_architecture("ghostnet_050")
    rec = measure_latency(arch, resolution=64, warmup=1, repeats=5, reference_ms=0.5)
    assert rec.reference_ms == 0.5 and rec.raw_ms is not None and rec.raw_ms > 0
    assert "drift-corrected" in rec.source
    plain = measure_latency(arch, resolution=64, warmup=1, repeats=5, drift_correction=False)
    assert plain.raw_ms is None and plain.reference_ms is None
    assert "drift-corrected" not in plain.source
    with pytest.raises(LatencyError, match="reference_ms: got -1"):
        measure_latency(arch, resolution=64, repeats=2, reference_ms=-1)


class _SimulatedClock:
    """The clocks the timing engine reads, advanced only by the simulated work: a test of the
    drift correction's arithmetic that other load on the machine cannot disturb."""

    def __init__(self) -> None:
        self.ns = 0

    def work(self, ms: float) -> None:
        self.ns += round(ms * 1e6)

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9

    thread_time_ns = perf_counter_ns


def test_drift_correction_undoes_a_machine_that_slows_down_half_the_time(monkeypatch):
    """A simulated machine running at half speed in every other stretch of 4 runs: the corrected
    median is the full-speed time, the uncorrected one is not."""
    clock = _SimulatedClock()
    monkeypatch.setattr("evaluators.latency.timing.time", clock)
    speed = {"n": 0}

    def factor() -> float:
        return 2.0 if (speed["n"] // 8) % 2 else 1.0

    def reference() -> None:
        speed["n"] += 1  # two reference runs per pair: stretches of 4 pairs
        clock.work(1.0 * factor())

    timing = time_runs(lambda: clock.work(8.0 * factor()), device="cpu", warmup=0, repeats=24,
                       max_time_s=10, target_rel_ci=0.01, reference=(reference, 1.0))
    assert timing.samples_ms == pytest.approx([8.0] * 24)
    assert sorted(timing.raw_ms) == pytest.approx([8.0] * 12 + [16.0] * 12)


def test_adaptive_measurement_stops_at_the_time_cap():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
    rec = measure_latency(model, resolution=32, warmup=1, max_time_s=0.05,
                          target_rel_ci=1e-9)  # unreachable: only the cap stops it
    assert rec.repeats >= 7 and not rec.converged
    assert rec.repeats * rec.min_ms <= 1000 * 0.05 + 10 * rec.p90_ms


def test_measurement_leaves_the_module_as_it_was():
    model = create_architecture("ghostnet_050").build().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure_latency(model, resolution=32, warmup=1, repeats=2)
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(("kwargs", "expect"), [
    ({"threads": 0}, "threads: got 0"),
    ({"dtype": "int8"}, "dtype: got 'int8'"),
    ({"device": "tpu"}, "device: got 'tpu'"),
    ({"repeats": 0}, "repeats: got 0"),
    ({"resolution": 4}, "resolution: got 4"),
])
def test_bad_options_name_the_argument(kwargs, expect):
    with pytest.raises(LatencyError, match=expect.replace("(", r"\(")):
        measure_latency(create_architecture("ghostnet_050"), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_user_error():
    with pytest.raises(LatencyError, match="CUDA is not available"):
        measure_latency(create_architecture("ghostnet_050"), device="cuda")


def test_lock_is_exclusive_across_processes_and_reentrant(tmp_path, monkeypatch):
    monkeypatch.setenv("GHOSTNAS_LATENCY_LOCK", str(tmp_path / "x.lock"))
    assert lock_path() == tmp_path / "x.lock"
    probe = ("from evaluators.latency import measurement_lock\n"
             "with measurement_lock(timeout_s=0.3):\n    print('got it')\n")
    env = {"GHOSTNAS_LATENCY_LOCK": str(tmp_path / "x.lock"), "PYTHONPATH": str(ROOT),
           "PATH": "/usr/bin:/bin"}
    with measurement_lock() as held, measurement_lock():  # re-entrant in one process
        assert held
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              env=env, cwd=ROOT)
        assert proc.returncode != 0 and "another GhostNAS process is measuring" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    assert proc.returncode == 0 and "got it" in proc.stdout, proc.stderr


# -- parts -------------------------------------------------------------------------------------


def test_parts_rebuild_the_network_exactly(rng):
    """The standalone part modules hold exactly the network's parameters, part by part."""
    archs = [create_architecture(n) for n in list_models()]
    archs += [random_architecture(rng, max_width=1.0) for _ in range(6)]
    for arch in archs:
        ps = parts(arch)
        assert len(ps) == arch.depth + 2  # stem, blocks, tail
        from_parts = sum(p.numel() for part in ps for p in part_module(part).parameters())
        assert from_parts == sum(p.numel() for p in arch.build().parameters()), arch


@pytest.mark.parametrize("arch", [default_space().sample(random.Random(3)),
                                  create_architecture("mobilenetv3_small_100")],
                         ids=["sampled", "mobilenetv3_small_100"])
def test_part_modules_run_on_their_input_shape(arch):
    """Each part takes the input its key describes and gives the next part's input (the tail
    gives the logits): a table's parts are timed on the shapes they see in the network."""
    ps = parts(arch, resolution=64)
    for part, after in zip(ps, (*ps[1:], None), strict=True):
        cin = 3 if part.kind.endswith("_stem") else part.field("cin")
        side = part.field("side")
        with torch.inference_mode():
            y = part_module(part).eval()(torch.zeros(1, cin, side, side))
        expected = ((1, arch.num_classes) if after is None
                    else (1, after.field("cin"), after.field("side"), after.field("side")))
        assert tuple(y.shape) == expected, part


@pytest.mark.parametrize("name", ["ghostnet_050", "mobilenetv3_small_100"])
def test_parts_run_in_turn_compute_the_network(name):
    """Loaded with the network's weights, the part modules run one after another give the
    network's output exactly: a part is the network's own layers, run as the network runs
    them (the stems and tails come from the networks' own builders)."""
    torch.manual_seed(0)
    arch = create_architecture(name)
    net = arch.build().eval()
    for key, t in net.state_dict().items():  # BN statistics that are not the identity
        if key.endswith("running_mean"):
            t.copy_(torch.randn_like(t) * 0.1)
        elif key.endswith("running_var"):
            t.copy_(torch.rand_like(t) + 0.5)
    weights = iter(net.state_dict().values())
    modules = []
    for part in parts(arch, resolution=64):
        module = part_module(part).eval()
        module.load_state_dict({k: next(weights) for k in module.state_dict()})
        modules.append(module)
    assert next(weights, None) is None  # every tensor of the network is in some part
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        y = x
        for module in modules:
            y = module(y)
        assert torch.equal(y, net(x))


# -- the table ---------------------------------------------------------------------------------


def test_table_round_trips_through_json_exactly(tiny_table, tmp_path):
    table = tiny_table[0]
    path = tmp_path / "t.json"
    table.save(path)
    loaded = LatencyTable.load(path)
    assert loaded == table
    assert loaded.dumps() == path.read_text(encoding="utf-8")
    assert loaded.source == str(path)


def test_table_keeps_its_reference_time_for_measurements_in_its_unit(tiny_table, tmp_path):
    table = tiny_table[0]
    assert table.reference_ms == pytest.approx(reference_latency())  # the process's, measured once
    assert table.measurement["reference_part"] == REFERENCE_PART.to_dict()
    table.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").reference_ms == table.reference_ms


def test_a_saved_version_2_table_loads_and_predicts_as_when_it_was_written():
    """tests/data/latency_table_v2.json is a real table (three networks and a held-out one at
    32 px), kept byte for byte as ``save`` wrote it, beside the predictions it made then. A
    table a user built on their device must keep loading, and predicting the same, for as
    long as the format's version stays 2."""
    path = DATA / "latency_table_v2.json"
    table = LatencyTable.load(path)
    assert table.dumps() == path.read_text(encoding="utf-8")
    expected = json.loads((DATA / "latency_table_v2_predictions.json").read_text(encoding="utf-8"))
    assert {row["fallback_parts"] > 0 for row in expected} == {True, False}  # entries, fallback
    for row in expected:
        pred = table.explain(architecture_from_dict(row["arch"]))
        assert (pred.latency_ms, pred.parts_sum_ms, pred.parts, len(pred.fallback)) == (
            row["latency_ms"], row["parts_sum_ms"], row["parts"], row["fallback_parts"]), row


def test_prediction_is_the_calibrated_sum_of_the_entries(tiny_table):
    table, archs, _ = tiny_table
    cal = table.calibration
    assert cal.networks == len(archs) and cal.scale > 0
    for arch in archs:
        ps = parts(arch, resolution=32)
        expected = cal.scale * sum(table.entries[p] for p in ps) + cal.offset_ms
        pred = table.explain(arch)
        assert pred.fallback == () and pred.parts == len(ps)
        assert pred.latency_ms == pytest.approx(expected, rel=1e-12)
        assert table.predict(arch) == pred.latency_ms
    assert table.self_check("fit")["fallback_part_share"] == 0


def test_missing_parts_come_from_the_fallback_and_are_reported(tiny_table):
    table, _, held = tiny_table
    pred = table.explain(held[0])
    assert pred.fallback and all(p not in table.entries for p in pred.fallback)
    assert math.isfinite(pred.latency_ms) and pred.latency_ms > 0
    check = table.self_check("holdout")
    assert check["networks"] == 1 and check["fallback_part_share"] > 0


def test_fallback_fit_recovers_known_costs():
    """Entries made from known per-feature costs are fitted back (an independent check)."""
    space = default_space()
    rng = random.Random(0)
    true = (0.01, 0.05, 0.1, 0.6, 2.0, 0.3, 5.0, 0.02)
    entries = {}
    for _ in range(30):
        for p in parts(space.sample(rng)):
            entries[p] = sum(c * f for c, f in zip(true, features(p), strict=True))
    fitted = fit_fallback(entries, batch=1)["ghost_block"]
    assert len(fitted) == len(FEATURES)
    assert fitted == pytest.approx(true, rel=1e-6)


def test_calibration_fit_recovers_scale_and_offset():
    sums = [3.0, 5.0, 8.0, 13.0, 21.0]
    cal = fit_calibration(sums, [1.25 * s + 2.0 for s in sums])
    assert (cal.scale, cal.offset_ms, cal.networks) == (pytest.approx(1.25), pytest.approx(2.0), 5)


def test_calibration_fit_keeps_a_scale_the_table_can_load():
    # whole networks that all take ~12 ms: the least-squares line is nearly flat (scale ~0.02,
    # offset ~11.8), outside what a table may hold, so the fit falls back to the median ratio
    sums = [10.0, 10.5, 11.0]
    cal = fit_calibration(sums, [12.0, 12.01, 12.02])
    assert (cal.scale, cal.offset_ms) == (pytest.approx(12.01 / 10.5), 0.0)


def _edited(tiny_table, tmp_path, edit) -> Path:
    data = tiny_table[0].to_dict()
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_table_for_other_threads_is_refused_naming_both(tiny_table, tmp_path):
    path = _edited(tiny_table, tmp_path, lambda d: d["settings"].update(threads=4))
    LatencyTable.load(path)  # readable: only a check against settings refuses it
    with pytest.raises(LatencyTableMismatch) as info:
        LatencyTable.load(path, expect={"device": "cpu", "threads": 1})
    msg = str(info.value)
    assert "threads=4" in msg and "threads=1" in msg and str(path) in msg
    assert "\n" not in msg


def test_table_from_another_device_is_refused(tiny_table, tmp_path):
    path = _edited(tiny_table, tmp_path, lambda d: d["settings"].update(device_name="Cortex-A76"))
    table = LatencyTable.load(path)
    with pytest.raises(LatencyTableMismatch, match="device_name='Cortex-A76'"):
        table.check(device_name=device_name("cpu"))
    with pytest.raises(LatencyTableMismatch, match="device_name='Cortex-A76'"):
        table.check_current()
    tiny_table[0].check_current(threads=1)  # built here
    table.check(threads=1, resolution=32, device_name=None)  # None: not checked
    with pytest.raises(ValueError, match="unknown setting 'thread'"):
        table.check(thread=1)


def _set_first_entry(key, value):
    def edit(d):
        d["entries"][0][key] = value
    return edit


@pytest.mark.parametrize(("edit", "expect"), [
    (_set_first_entry("ms", float("nan")), "entries[0].ms: got nan"),
    (_set_first_entry("ms", -1.0), "entries[0].ms: got -1.0"),
    (_set_first_entry("colour", 1), "entries[0]: unknown key 'colour'"),
    (_set_first_entry("part", "vit_block"), "entries[0].part: got 'vit_block'"),
    (_set_first_entry("side", "7"), "entries[0].side: got '7'"),
    (lambda d: d.update(format="other"), "format: got 'other'"),
    (lambda d: d.update(version=1), "version: got 1, expected 2 (written by another GhostNAS "
                                    "version; rebuild it on the target device with 'python -m "
                                    "search latency-table')"),
    (lambda d: d.update(entries=[]), "entries: expected a non-empty list"),
    (lambda d: d["settings"].pop("threads"), "settings: missing key 'threads'"),
    (lambda d: d["calibration"].update(scale=0), "calibration.scale: got 0"),
    (lambda d: d["fallback"]["coef"].update(ghost_block=[1.0]), "fallback.coef.ghost_block"),
    (lambda d: d.update(extra=1), "unknown key 'extra'"),
    (_set_first_entry("part", ["x"]), "entries[0].part: got ['x'], expected one of ghost_stem"),
    (_set_first_entry("side", 10**400), "entries[0].side: got 1000"),
    (_set_first_entry("ms", 1e308), "entries[0].ms: got 1e+308, expected a finite positive "
                                    "number <= 1e+06"),
    (_set_first_entry("ms", 10**400), "entries[0].ms: got 1000"),  # past float: not a crash
    (lambda d: d["entries"][1].update(se="yes"), "entries[1].se: got 'yes', expected true or "
                                                 "false"),
    # a scale or offset out of range would predict inf or nonsense
    (lambda d: d["calibration"].update(scale=1e308), "calibration.scale: got 1e+308, expected "
                                                     "a finite number >= 0.1 and <= 10"),
    (lambda d: d["calibration"].update(scale=float("inf")), "calibration.scale: got inf"),
    (lambda d: d["calibration"].update(scale=-1.0), "calibration.scale: got -1.0"),
    (lambda d: d["calibration"].update(scale=0.01), "calibration.scale: got 0.01"),
    (lambda d: d["calibration"].update(offset_ms=1e308), "calibration.offset_ms: got 1e+308"),
    (lambda d: d["calibration"].update(networks=-1), "calibration.networks: got -1"),
    (lambda d: d["fallback"]["coef"].update({"*": [1e308] * len(FEATURES)}),
     "fallback.coef.*: got 1e+308, expected a finite number >= 0 and <= 1e+06"),
    (lambda d: d["settings"].update(device="tpu"), "settings.device: got 'tpu', expected one of "
                                                   "cpu, cuda"),
    (lambda d: d["settings"].update(device=["cpu"]), "settings.device: got ['cpu']"),
    (lambda d: d["settings"].update(dtype="int8"), "settings.dtype: got 'int8', expected one of "
                                                   "float32, float16, bfloat16"),
    (lambda d: d["settings"].update(batch=10**400), "settings.batch: got 1000"),
    (lambda d: d["measurement"].update(reference_ms=[1]), "measurement.reference_ms: got [1]"),
    (lambda d: d["networks"][0]["arch"].update(family=["x"]),
     "networks[0].arch: family: got ['x'], expected one of ghostnet, mobilenetv3"),
    (lambda d: d["networks"][0]["arch"].update(width=1e308),
     "networks[0].arch: width: got 1e+308, expected a number > 0 and <= 16"),
])
def test_bad_table_content_is_refused_in_one_line(tiny_table, tmp_path, edit, expect):
    path = _edited(tiny_table, tmp_path, edit)
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    msg = str(info.value)
    assert expect in msg and str(path) in msg and "\n" not in msg, msg


@pytest.mark.parametrize(("content", "expect"), [
    (b"{oops", "not valid JSON"),
    (b"\xff\xfe", "is UTF-16 text; save it as UTF-8"),
    (b"{\"a\": \"\xe9\"}", "is not UTF-8 text; save it as UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b" " * (MAX_JSON_BYTES + 1), "larger than"),
])
def test_corrupt_or_oversized_file_is_refused_in_one_line(tmp_path, content, expect):
    path = tmp_path / "t.json"
    path.write_bytes(content)
    with pytest.raises(LatencyTableError) as info:
        LatencyTable.load(path)
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_refused():
    with pytest.raises(LatencyTableError, match="does not exist"):
        LatencyTable.load("/nonexistent/table.json")
