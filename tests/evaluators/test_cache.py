"""The evaluation cache: keyed so that any change of network, proxy or data misses."""

from __future__ import annotations

import dataclasses
import json

import pytest

from evaluators.cache import EvaluationCache, cache_key
from space import create_architecture

PROXY = {"epochs": 3, "batch_size": 128, "lr": 0.2, "seed": 0, "resolution": 16,
         "device": "cpu", "threads": 1}


def _reports(epochs: int = 3):
    return [{"epoch": e, "top1": 50.0 + e, "loss": 2.0 / e, "train_seconds": 1.5 * e,
             "proxy_seconds": 2.0 * e, "images_per_second": 900.0} for e in range(1, epochs + 1)]


def test_a_changed_proxy_setting_network_or_data_misses():
    arch = create_architecture("ghostnet_050")
    key = cache_key(arch, PROXY, "d1")
    assert key == cache_key(arch, dict(reversed(PROXY.items())), "d1")  # order is no setting
    for change in ({"epochs": 4}, {"seed": 1}, {"resolution": 24}, {"threads": 2}):
        assert cache_key(arch, {**PROXY, **change}, "d1") != key, change
    assert cache_key(arch, PROXY, "d2") != key
    assert cache_key(create_architecture("ghostnet_100"), PROXY, "d1") != key


def test_tables_that_build_the_same_network_share_a_key():
    arch = create_architecture("ghostnet_100")
    # k of a stride-1 block without a conv shortcut is unused: the same network
    stage = arch.stages[0]
    twin = dataclasses.replace(arch, stages=((dataclasses.replace(stage[0], k=5),
                                              *stage[1:]), *arch.stages[1:]))
    assert twin != arch and twin.canonical() == arch.canonical()
    assert cache_key(twin, PROXY, "d") == cache_key(arch, PROXY, "d")


def test_put_then_get_round_trips_and_damage_is_a_miss(tmp_path):
    cache = EvaluationCache(tmp_path / "cache")
    key = cache_key(create_architecture("ghostnet_050"), PROXY, "d")
    assert cache.get(key, epochs=3) is None
    cache.put(key, _reports(), about={"name": "ghostnet_050"})
    got = cache.get(key, epochs=3)
    assert [r["top1"] for r in got] == [51.0, 52.0, 53.0]
    assert cache.get(key, epochs=4) is None  # another length is another setting
    path = cache.path(key)
    entry = json.loads(path.read_text())
    entry["epochs"][1]["top1"] = float("nan")
    path.write_text(json.dumps(entry))
    assert cache.get(key, epochs=3) is None
    path.write_text("{not json")
    assert cache.get(key, epochs=3) is None
    entry["epochs"][1]["top1"] = 52.0
    entry["key"] = "0" * 64  # a file copied under another name
    path.write_text(json.dumps(entry))
    assert cache.get(key, epochs=3) is None


def test_keys_are_checked_before_they_name_a_file(tmp_path):
    with pytest.raises(ValueError, match="sha256"):
        EvaluationCache(tmp_path).path("../../etc/passwd")
