"""The architecture value and its JSON file format."""

from __future__ import annotations

import codecs
import copy
import json

import pytest

from space import (
    Architecture,
    ArchitectureError,
    Block,
    architecture_from_dict,
    create_architecture,
    list_models,
    load_architecture,
    save_architecture,
)
from tests.helpers import random_architecture

ISSUE_EXAMPLE = {
    "width": 1.0, "stem": 16, "head": 1280, "num_classes": 1000, "dropout": 0.2,
    "stages": [[{"k": 3, "exp": 16, "out": 16, "se": False, "s": 2, "d": 3, "stride": 1}],
               [{"k": 3, "exp": 48, "out": 24, "se": False, "s": 2, "d": 3, "stride": 2},
                {"k": 3, "exp": 72, "out": 24, "se": False, "s": 2, "d": 3, "stride": 1}]],
}


def test_file_with_exactly_the_documented_keys_loads(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ISSUE_EXAMPLE))
    arch, provenance = load_architecture(path)
    assert provenance is None
    assert arch.width == 1.0 and arch.depth == 3
    assert arch.stages[1][0] == Block(k=3, exp=48, out=24, se=False, s=2, d=3, stride=2)


def test_round_trip_many_random_architectures(rng, tmp_path):
    for i in range(300):
        arch = random_architecture(rng)
        assert Architecture.from_dict(arch.to_dict()) == arch
        assert architecture_from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        if i % 50 == 0:
            save_architecture(arch, tmp_path / "x.json", provenance={"trial": i})
            loaded, prov = load_architecture(tmp_path / "x.json")
            assert loaded == arch and prov == {"trial": i}


@pytest.mark.parametrize("name", list_models())
def test_references_round_trip(name):
    arch = create_architecture(name)
    assert architecture_from_dict(arch.to_dict()) == arch


def test_written_file_has_only_documented_keys_plus_version():
    data = create_architecture("ghostnet_100").to_dict()
    assert set(data) == set(ISSUE_EXAMPLE) | {"version"}
    assert set(data["stages"][0][0]) == {"k", "exp", "out", "se", "s", "d", "stride"}


def test_from_dict_never_mutates_its_input():
    data = copy.deepcopy(ISSUE_EXAMPLE)
    Architecture.from_dict(data)
    assert data == ISSUE_EXAMPLE


def test_value_is_frozen_and_hashable():
    a = Architecture.from_dict(ISSUE_EXAMPLE)
    b = Architecture.from_dict(copy.deepcopy(ISSUE_EXAMPLE))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.width = 2.0  # type: ignore[misc]


def _with_block(**change):
    data = copy.deepcopy(ISSUE_EXAMPLE)
    data["stages"][1][0].update(change)
    return data


def _with_top(**change):
    data = copy.deepcopy(ISSUE_EXAMPLE)
    data.update(change)
    return data


INVALID = [
    (_with_block(s=1), "stages[1][0].s", "1", ">= 2"),
    (_with_block(d=2), "stages[1][0].d", "2", "odd"),
    (_with_block(d=0), "stages[1][0].d", "0", "odd"),
    (_with_block(stride=3), "stages[1][0].stride", "3", "1 or 2"),
    (_with_block(k=4), "stages[1][0].k", "4", "odd"),
    (_with_block(exp=0), "stages[1][0].exp", "0", ">= 1"),
    (_with_block(out=-8), "stages[1][0].out", "-8", ">= 1"),
    (_with_block(k="3"), "stages[1][0].k", "'3'", "integer"),
    (_with_block(s=2.0), "stages[1][0].s", "2.0", "integer"),
    (_with_block(se="yes"), "stages[1][0].se", "'yes'", "true or false"),
    (_with_block(se=1), "stages[1][0].se", "1", "true or false"),
    (_with_block(kernel=3), "stages[1][0]", "'kernel'", "allowed keys"),
    (_with_top(width=0), "width", "0", "> 0"),
    (_with_top(width=-1.0), "width", "-1.0", "> 0"),
    (_with_top(width="1.0"), "width", "'1.0'", "number"),
    (_with_top(width=True), "width", "got true", "number"),  # as the JSON file wrote it
    (_with_top(width=None), "width", "got null", "number"),
    (_with_top(stem=0), "stem", "0", ">= 1"),
    (_with_top(head=1.5), "head", "1.5", "integer"),
    (_with_top(num_classes=0), "num_classes", "0", ">= 1"),
    (_with_top(dropout=1.0), "dropout", "1.0", "< 1"),
    (_with_top(stages=[]), "stages", "[]", "non-empty"),
    (_with_top(stages=[[]]), "stages[0]", "[]", "non-empty"),
    (_with_top(stages="abc"), "stages", "'abc'", "non-empty list"),
    (_with_top(colour="red"), "architecture", "'colour'", "allowed keys"),
    (_with_top(version=7), "version", "7", "1"),
    (_with_top(version=True), "version", "got true", "expected 1"),
    (_with_top(version=1.0), "version", "1.0", "expected 1"),
    (_with_top(family="resnet"), "family", "'resnet'", "ghostnet"),
    (_with_top(family=["ghostnet"]), "family", "['ghostnet']", "ghostnet, mobilenetv3"),
    (_with_top(family={"a": 1}), "family", "{'a': 1}", "ghostnet, mobilenetv3"),
    # absurd values are refused with the allowed range instead of overflowing later
    (_with_top(width=1e308), "width", "1e+308", "<= 16"),
    (_with_top(width=1e30), "width", "1e+30", "<= 16"),
    (_with_block(out=10**400), "stages[1][0].out", str(10**400), "<= 65,536"),
    (_with_block(exp=65_537), "stages[1][0].exp", "65537", "<= 65,536"),
    (_with_block(d=1_000_000_001), "stages[1][0].d", "1000000001", "odd integer >= 1 and <= 31"),
    (_with_block(k=33), "stages[1][0].k", "33", "<= 31"),
    (_with_block(s=65), "stages[1][0].s", "65", ">= 2 and <= 64"),
    (_with_top(stem=65_537), "stem", "65537", "<= 65,536"),
    (_with_top(head=10**30), "head", str(10**30), "<= 65,536"),
    (_with_top(num_classes=1_000_001), "num_classes", "1000001", "<= 1,000,000"),
]


@pytest.mark.parametrize(("data", "field", "value", "allowed"), INVALID,
                         ids=[f"{i}-{c[1]}-{c[2][:20]}" for i, c in enumerate(INVALID)])
def test_invalid_values_name_field_value_and_rule(data, field, value, allowed):
    with pytest.raises(ArchitectureError) as info:
        architecture_from_dict(data)
    message = str(info.value)
    assert field in message and value in message and allowed in message
    assert "\n" not in message


def test_largest_allowed_values_are_valid():
    for data in (_with_block(k=31, d=31, s=64, exp=65_536, out=65_536),
                 _with_top(width=16, stem=65_536, head=65_536, num_classes=1_000_000)):
        arch = Architecture.from_dict(data)
        assert Architecture.from_dict(arch.to_dict()) == arch  # and it round-trips


def test_mobilenetv3_has_the_same_bounds():
    data = create_architecture("mobilenetv3_small_100").to_dict()
    for edit, field, allowed in [
        (lambda d: d.update(width=1e308), "width", "<= 16"),
        (lambda d: d.update(head=65_537), "head", "<= 65,536"),
        (lambda d: d.update(stem=10**400), "stem", "<= 65,536"),
        (lambda d: d.update(num_classes=1_000_001), "num_classes", "<= 1,000,000"),
        (lambda d: d["blocks"][1].update(exp=65_537), "blocks[1].exp", "<= 65,536"),
        (lambda d: d["blocks"][1].update(k=33), "blocks[1].k", "<= 31"),
    ]:
        bad = copy.deepcopy(data)
        edit(bad)
        with pytest.raises(ArchitectureError) as info:
            architecture_from_dict(bad)
        assert str(info.value).startswith(f"{field}: got ") and allowed in str(info.value)


def test_missing_key_is_named():
    data = copy.deepcopy(ISSUE_EXAMPLE)
    del data["stages"][0][0]["d"]
    with pytest.raises(ArchitectureError, match=r"stages\[0\]\[0\]: missing key 'd'"):
        architecture_from_dict(data)


def test_python_constructor_validates_too():
    with pytest.raises(ArchitectureError, match="block.s: got 1"):
        Block(k=3, exp=16, out=16, se=False, s=1)
    with pytest.raises(ArchitectureError, match="stages"):
        Architecture(stages=())


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "not valid JSON"),
    ('{"width": 1.0, "stem": 16', "not valid JSON"),
    ("[1, 2]", "architecture: got an array, expected a JSON object"),
    ("null", "architecture: got null, expected a JSON object"),
    ('{"width": 0.5, "stem": 16, "width": 0.75}', "has the key 'width' twice in one object"),
    ('{"width": 0.5, "provenance": [1]}', "provenance: got an array, expected a JSON object"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"width": 1.0, "stem": ' + "1" * 5000 + "}",
     "not valid JSON: it holds an integer of more than"),
])
def test_bad_files_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ArchitectureError, match=message) as info:
        load_architecture(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ArchitectureError, match="does not exist"):
        load_architecture(tmp_path / "nope.json")
    with pytest.raises(ArchitectureError, match="got an empty path"):
        load_architecture("")  # not "'.' does not exist"


def test_encodings_a_text_editor_may_save(tmp_path):
    arch = create_architecture("ghostnet_050")
    text = json.dumps(arch.to_dict())
    (tmp_path / "bom.json").write_bytes(codecs.BOM_UTF8 + text.encode())  # Windows Notepad
    assert load_architecture(tmp_path / "bom.json")[0] == arch
    (tmp_path / "u16.json").write_text(text, encoding="utf-16")
    with pytest.raises(ArchitectureError, match="is UTF-16 text; save it as UTF-8"):
        load_architecture(tmp_path / "u16.json")
    (tmp_path / "latin1.json").write_bytes(b'{"width": 1.0, "note": "caf\xe9"}')
    with pytest.raises(ArchitectureError, match="is not UTF-8 text; save it as UTF-8"):
        load_architecture(tmp_path / "latin1.json")
