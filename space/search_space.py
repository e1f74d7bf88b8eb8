"""The search space over GhostNet's stage table, as data.

A :class:`SearchSpace` holds choice lists: a global width multiplier; per stage the output
channels, the depth (number of blocks), the depthwise kernel ``k``; per block position the
expansion size (#exp), SE on/off, the Ghost ratio ``s`` and the cheap-operation kernel ``d``.
Stage strides are fixed (they set the resolution schedule). The default space is centred on the
paper's table (Han et al., CVPR 2020, Table 1) and contains GhostNet 0.5x, 1.0x and 1.3x.

``k`` is chosen per stage, not per block: in a stage only the first block can have a strided
depthwise conv or a conv shortcut (the others have in == out and stride 1, so an identity
shortcut and no depthwise conv), so a per-block ``k`` after the first would be a dimension that
changes nothing. The paper's table also uses one ``k`` per stage.

The space owns the mapping between an architecture and the sampler's flat parameters:
``suggest(trial)`` samples define-by-run through ``trial.suggest_categorical`` (Optuna's trial
API, duck-typed: this module does not import Optuna), ``encode``/``decode`` convert. Parameter
names: ``width``, ``s{i}.out``, ``s{i}.depth``, ``s{i}.k``, ``s{i}.b{j}.exp``, ``s{i}.b{j}.se``,
``s{i}.b{j}.s``, ``s{i}.b{j}.d`` (only for ``j < depth``).
"""

from __future__ import annotations

import functools
import math
import os
import random
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from space.checks import (
    ArchitectureError,
    UserError,
    check_channels,
    check_classes,
    check_dropout,
    check_ghost_ratio,
    check_int,
    check_kernel,
    check_keys,
    check_width,
)
from space.ghostnet import _GHOSTNET_TABLE, Architecture, Block

__all__ = ["SearchSpace", "StageSpace", "BlockSpace", "SpaceError", "Trial", "default_space",
           "load_space", "edits"]


class SpaceError(UserError):
    """A search-space file or value breaks a rule, or an architecture is not in the space."""


class Trial(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


def _choices(where: str, values: Any, check) -> tuple:
    """The choices, each checked by the architecture's own rule for that field, then distinct
    (checked first: a list or dict among them is unhashable)."""
    if isinstance(values, (list, tuple)) and values:
        try:
            checked = tuple(check(f"{where}[{i}]", v) for i, v in enumerate(values))
        except ArchitectureError as exc:
            raise SpaceError(str(exc)) from None
        if len(set(checked)) == len(checked):
            return checked
    raise SpaceError(f"{where}: got {values!r}, expected a non-empty list of distinct choices")


def _bool(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ArchitectureError(f"{where}: got {v!r}, expected true or false")
    return v


@dataclass(frozen=True)
class BlockSpace:
    """Choices for one block position of a stage."""

    exp: tuple[int, ...]
    se: tuple[bool, ...] = (False, True)
    s: tuple[int, ...] = (2, 3, 4)
    d: tuple[int, ...] = (1, 3, 5)

    KEYS: ClassVar[tuple[str, ...]] = ("exp", "se", "s", "d")

    def validated(self, where: str) -> BlockSpace:
        return BlockSpace(
            exp=_choices(f"{where}.exp", self.exp, check_channels),
            se=_choices(f"{where}.se", self.se, _bool),
            s=_choices(f"{where}.s", self.s, check_ghost_ratio),
            d=_choices(f"{where}.d", self.d, check_kernel))


@dataclass(frozen=True)
class StageSpace:
    """Choices for one stage; ``blocks[j]`` applies to its j-th block (len = max depth)."""

    out: tuple[int, ...]
    depth: tuple[int, ...]
    stride: int
    k: tuple[int, ...]
    blocks: tuple[BlockSpace, ...]

    KEYS: ClassVar[tuple[str, ...]] = ("out", "depth", "stride", "k", "blocks")

    def validated(self, where: str) -> StageSpace:
        try:
            stride = check_int(f"{where}.stride", self.stride, choices=(1, 2))
        except ArchitectureError as exc:
            raise SpaceError(str(exc)) from None
        blocks = self.blocks
        if not isinstance(blocks, (list, tuple)) or not blocks:
            raise SpaceError(f"{where}.blocks: expected a non-empty list of block choices")
        stage = StageSpace(
            out=_choices(f"{where}.out", self.out, check_channels),
            depth=_choices(f"{where}.depth", self.depth, check_int),
            stride=stride,
            k=_choices(f"{where}.k", self.k, check_kernel),
            blocks=tuple(b.validated(f"{where}.blocks[{j}]") for j, b in enumerate(blocks)))
        if max(stage.depth) > len(stage.blocks):
            raise SpaceError(
                f"{where}.depth: choice {max(stage.depth)} needs {max(stage.depth)} entries in "
                f"{where}.blocks, found {len(stage.blocks)}")
        return stage


@dataclass(frozen=True)
class SearchSpace:
    """Choice lists over the stage table; see the module docstring."""

    stages: tuple[StageSpace, ...]
    width: tuple[float, ...] = (0.35, 0.5, 0.75, 1.0, 1.3, 1.6)
    stem: int = 16
    head: int = 1280
    num_classes: int = 1000
    dropout: float = 0.2

    KEYS: ClassVar[tuple[str, ...]] = ("width", "stem", "head", "num_classes", "dropout", "stages")

    def __post_init__(self) -> None:
        if not isinstance(self.stages, (list, tuple)) or not self.stages:
            raise SpaceError("stages: expected a non-empty list of stage choices")
        object.__setattr__(self, "stages", tuple(
            s.validated(f"stages[{i}]") for i, s in enumerate(self.stages)))
        object.__setattr__(self, "width", _choices("width", self.width, check_width))
        try:
            check_channels("stem", self.stem)
            check_channels("head", self.head)
            check_classes("num_classes", self.num_classes)
            check_dropout("dropout", self.dropout)
        except ArchitectureError as exc:
            raise SpaceError(str(exc)) from None

    # -- sampling ----------------------------------------------------------------------------

    def suggest(self, trial: Trial) -> Architecture:
        """Sample an architecture define-by-run; only samples, computes nothing else."""
        params = {"width": trial.suggest_categorical("width", self.width)}
        for i, st in enumerate(self.stages):
            params[f"s{i}.out"] = trial.suggest_categorical(f"s{i}.out", st.out)
            params[f"s{i}.depth"] = depth = trial.suggest_categorical(f"s{i}.depth", st.depth)
            params[f"s{i}.k"] = trial.suggest_categorical(f"s{i}.k", st.k)
            for j in range(depth):
                b = st.blocks[j]
                for key in BlockSpace.KEYS:
                    name = f"s{i}.b{j}.{key}"
                    params[name] = trial.suggest_categorical(name, getattr(b, key))
        return self.decode(params)

    def sample(self, rng: random.Random) -> Architecture:
        """A uniformly random choice per dimension, reproducible for a seeded ``rng``."""
        return self.suggest(_RandomTrial(rng))

    # -- flat parameters ---------------------------------------------------------------------

    def decode(self, params: dict[str, Any]) -> Architecture:
        """Flat parameters (as sampled) -> architecture; missing or invalid names are errors."""
        try:
            stages = []
            for i, st in enumerate(self.stages):
                depth, out, k = params[f"s{i}.depth"], params[f"s{i}.out"], params[f"s{i}.k"]
                blocks = []
                for j in range(depth):
                    blocks.append(Block(
                        k=k, exp=params[f"s{i}.b{j}.exp"], out=out, se=params[f"s{i}.b{j}.se"],
                        s=params[f"s{i}.b{j}.s"], d=params[f"s{i}.b{j}.d"],
                        stride=st.stride if j == 0 else 1))
                stages.append(tuple(blocks))
            return Architecture(stages=tuple(stages), width=params["width"], stem=self.stem,
                                head=self.head, num_classes=self.num_classes,
                                dropout=self.dropout)
        except KeyError as exc:
            raise SpaceError(f"parameters: missing {exc.args[0]!r}") from None

    def encode(self, arch: Architecture) -> dict[str, Any]:
        """Architecture -> flat parameters; raises :class:`SpaceError` naming the first
        dimension where ``arch`` is not a point of this space."""

        def pick(name: str, value: Any, choices: tuple) -> Any:
            if value not in choices or type(value) is not type(choices[0]) and not (
                    isinstance(value, float) and isinstance(choices[0], float)):
                raise SpaceError(f"not a point of the space: {name} = {value!r} is not one of "
                                 f"{list(choices)}")
            return value

        if not isinstance(arch, Architecture):
            raise SpaceError(f"not a point of the space: a {arch.family} architecture")
        for key in ("stem", "head", "num_classes", "dropout"):
            if getattr(arch, key) != getattr(self, key):
                raise SpaceError(f"not a point of the space: {key} = {getattr(arch, key)!r}, "
                                 f"the space fixes it to {getattr(self, key)!r}")
        if len(arch.stages) != len(self.stages):
            raise SpaceError(f"not a point of the space: {len(arch.stages)} stages, the space "
                             f"has {len(self.stages)}")
        params: dict[str, Any] = {"width": pick("width", arch.width, self.width)}
        for i, (stage, st) in enumerate(zip(arch.stages, self.stages, strict=True)):
            params[f"s{i}.depth"] = pick(f"s{i}.depth", len(stage), st.depth)
            params[f"s{i}.out"] = pick(f"s{i}.out", stage[0].out, st.out)
            params[f"s{i}.k"] = pick(f"s{i}.k", stage[0].k, st.k)
            for j, b in enumerate(stage):
                expect_stride = st.stride if j == 0 else 1
                if b.stride != expect_stride or b.out != stage[0].out or b.k != stage[0].k:
                    raise SpaceError(
                        f"not a point of the space: stages[{i}][{j}] must have stride "
                        f"{expect_stride}, out {stage[0].out} and k {stage[0].k} (one per stage)")
                for key in BlockSpace.KEYS:
                    name = f"s{i}.b{j}.{key}"
                    params[name] = pick(name, getattr(b, key), getattr(st.blocks[j], key))
        return params

    def contains(self, arch: Architecture) -> bool:
        try:
            self.encode(arch)
        except SpaceError:
            return False
        return True

    # -- size --------------------------------------------------------------------------------

    def dimensions(self) -> list[tuple[str, tuple]]:
        """Every dimension (flat parameter name, choices), blocks beyond min depth included."""
        dims: list[tuple[str, tuple]] = [("width", self.width)]
        for i, st in enumerate(self.stages):
            dims += [(f"s{i}.out", st.out), (f"s{i}.depth", st.depth), (f"s{i}.k", st.k)]
            for j in range(max(st.depth)):
                dims += [(f"s{i}.b{j}.{key}", getattr(st.blocks[j], key))
                         for key in BlockSpace.KEYS]
        return dims

    def size(self) -> int:
        """Number of distinct architectures (exact)."""
        total = len(self.width)
        for st in self.stages:
            per_depth = 0
            for depth in st.depth:
                n = 1
                for j in range(depth):
                    b = st.blocks[j]
                    n *= len(b.exp) * len(b.se) * len(b.s) * len(b.d)
                per_depth += n
            total *= len(st.out) * len(st.k) * per_depth
        return total

    # -- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": list(self.width), "stem": self.stem, "head": self.head,
            "num_classes": self.num_classes, "dropout": self.dropout,
            "stages": [{"out": list(st.out), "depth": list(st.depth), "stride": st.stride,
                        "k": list(st.k),
                        "blocks": [{key: list(getattr(b, key)) for key in BlockSpace.KEYS}
                                   for b in st.blocks]} for st in self.stages],
        }

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        try:
            check_keys("space", data, ("stages",), optional=("width", "stem", "head",
                                                              "num_classes", "dropout"))
            if not isinstance(data["stages"], list) or not data["stages"]:
                raise SpaceError("stages: expected a non-empty list of stage choices")
            stages = []
            for i, st in enumerate(data["stages"]):
                check_keys(f"stages[{i}]", st, StageSpace.KEYS)
                blocks = st["blocks"]
                if not isinstance(blocks, list) or not blocks:
                    raise SpaceError(f"stages[{i}].blocks: expected a non-empty list")
                parsed = []
                for j, b in enumerate(blocks):
                    check_keys(f"stages[{i}].blocks[{j}]", b, ("exp",), optional=("se", "s", "d"))
                    parsed.append(BlockSpace(**b))
                stages.append(StageSpace(out=st["out"], depth=st["depth"], stride=st["stride"],
                                         k=st["k"], blocks=tuple(parsed)))
            extra = {k: data[k] for k in ("width", "stem", "head", "num_classes", "dropout")
                     if k in data}
            return cls(stages=tuple(stages), **extra)
        except ArchitectureError as exc:
            raise SpaceError(str(exc)) from None


def edits(a: Architecture, b: Architecture) -> int | None:
    """How many of the space's dimensions differ between two GhostNet tables: the width, each
    stage's output channels, depth and ``k``, and each block's #exp, SE, ``s`` and ``d`` in the
    blocks both have (adding or removing blocks is the one depth edit). None when the tables
    have different numbers of stages (no edit path in a space of fixed stages).

    One or two edits from a reference model is its *neighbour*, not a new design.
    """
    if not isinstance(a, Architecture) or not isinstance(b, Architecture) \
            or len(a.stages) != len(b.stages):
        return None
    n = int(a.width != b.width)
    for sa, sb in zip(a.stages, b.stages, strict=True):
        n += (sa[0].out != sb[0].out) + (len(sa) != len(sb)) + (sa[0].k != sb[0].k)
        for ba, bb in zip(sa, sb, strict=False):  # the blocks both stages have
            n += sum(getattr(ba, key) != getattr(bb, key) for key in BlockSpace.KEYS)
    return n


class _RandomTrial:
    """The Optuna trial API over ``random.Random``: for tests, benchmarks and table building."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.rng.choice(choices)


def _exp_choices(out: int, paper: tuple[int, ...]) -> tuple[int, ...]:
    """Paper's #exp for this position plus 2x, 3x, 4x and 6x the stage's output channels."""
    ratios = {int(round(out * r / 8.0)) * 8 for r in (2, 3, 4, 6)}
    return tuple(sorted(ratios | set(paper)))


@functools.cache
def default_space() -> SearchSpace:
    """The built-in space: GhostNet's table with alternatives around every entry."""
    out_choices = ((12, 16, 20), (16, 24, 32), (32, 40, 48), (64, 80, 96), (96, 112, 128),
                   (128, 160, 192))
    depth_choices = ((1,), (1, 2, 3), (1, 2, 3), (2, 3, 4, 5), (1, 2, 3), (2, 3, 4, 5, 6))
    stages = []
    for i, table in enumerate(_GHOSTNET_TABLE):
        paper_exp = [row[1] for row in table]
        n_pos = max(depth_choices[i])
        blocks = []
        for j in range(n_pos):
            # Positions beyond the paper's depth offer what the paper's last block offers.
            paper = paper_exp[min(j, len(paper_exp) - 1)]
            blocks.append(BlockSpace(exp=_exp_choices(table[0][2], (paper,))))
        stages.append(StageSpace(out=out_choices[i], depth=depth_choices[i], stride=table[0][4],
                                 k=(3, 5), blocks=tuple(blocks)))
    return SearchSpace(stages=tuple(stages))


def load_space(path: str | os.PathLike | None) -> SearchSpace:
    """The default space, or the one in a JSON file (same layout as ``to_dict()``)."""
    if path is None:
        return default_space()
    from space.io import read_json_file

    try:
        data = read_json_file(path, what="space")
    except ArchitectureError as exc:
        raise SpaceError(str(exc)) from None
    try:
        return SearchSpace.from_dict(data)
    except SpaceError as exc:
        raise SpaceError(f"{path}: {exc}") from None


def _log10(n: int) -> float:
    return math.log10(n) if n > 0 else 0.0
