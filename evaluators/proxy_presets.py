"""Named proxies (``--proxy``): how much training each candidate gets, from quick to thorough.

A preset fixes, for every proxy training of a run, the training images (a seeded,
class-stratified subset of ``max_train``), the held-out images it is scored on (``max_val``),
the epochs and the input side; the rest of the recipe is the data set's
(:data:`evaluators.proxy.PRESETS`). ``benchmarks/proxy_budget.py`` measures each preset: Kendall
tau against a long training, the seed-to-seed spread of top-1, seconds per network
(docs/data-and-proxy.md).

One precedence rule: an explicit option (``--epochs``, ``--max-train``, ``--max-val``,
``--resolution``) overrides its one setting of the preset; the preset (``--proxy``, else the data
kind's default) gives the others. A preset's measured seed spread describes the preset only:
once an option overrides it, the run counts no seed spread it has not measured.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from evaluators.proxy import proxy_config
from evaluators.training import ConfigError

__all__ = ["ProxyPreset", "ResolvedProxy", "PROXY_PRESETS", "DEFAULT_PRESET", "data_kind",
           "describe", "kind_dataset", "resolve_proxy"]


@dataclass(frozen=True)
class ProxyPreset:
    epochs: int
    max_train: int | None = None  # training images; None: the whole training split
    max_val: int | None = None  # held-out images scored; None: the whole held-out split
    resolution: int | None = None  # input side (px); None: the data set's proxy resolution
    seed_sd: float | None = None  # seed-to-seed standard deviation of top-1, points, measured
    measured_in: str = ""  # the record seed_sd comes from


_DIGITS_RECORD = "benchmarks/results/proxy_budget_digits.json"
_CIFAR_RECORD = "benchmarks/results/proxy_budget_cifar.json"

# Per kind of data. The digits are 1,797 images of 8x8: epochs are the only lever.
PROXY_PRESETS: dict[str, dict[str, ProxyPreset]] = {
    "digits": {
        # seed_sd: pooled over 14 networks x 3 seeds (d3 and d6 in the record)
        "standard": ProxyPreset(epochs=3, seed_sd=1.50, measured_in=_DIGITS_RECORD),
        "thorough": ProxyPreset(epochs=6, seed_sd=0.78, measured_in=_DIGITS_RECORD),
    },
    "images": {
        # EcoNAS's trade (Zhou et al., CVPR 2020): every image seen, for few epochs at low side.
        # seed_sd: pooled over 8 networks x 3 seeds on CIFAR-10 (all-e2-r16 in the record)
        "quick": ProxyPreset(epochs=2, max_val=5_000, resolution=16, seed_sd=2.13,
                             measured_in=_CIFAR_RECORD),
        # seed_sd: pooled over 6 networks x 3 seeds on CIFAR-10 (20k-e5-r32 in the record)
        "standard": ProxyPreset(epochs=5, max_train=20_000, max_val=5_000, seed_sd=1.32,
                                measured_in=_CIFAR_RECORD),
        # seed_sd: pooled over GhostNet 0.5x and 1.3x x 3 seeds on CIFAR-10 (all-e5-r32)
        "thorough": ProxyPreset(epochs=5, seed_sd=1.16, measured_in=_CIFAR_RECORD),
    },
}
DEFAULT_PRESET = {"digits": "standard", "images": "thorough"}


def data_kind(dataset: str) -> str:
    """"digits" for the embedded digits; "images" for CIFAR and image folders."""
    return "digits" if dataset == "digits" else "images"


def kind_dataset(kind: str) -> str:
    """The data set whose proxy recipe stands for ``kind`` (the inverse of :func:`data_kind`)."""
    return "digits" if kind == "digits" else "folder"


def describe(p: ProxyPreset | ResolvedProxy, kind: str) -> str:
    """One line for --help and messages: training images x epochs at the side (``kind``'s
    proxy side where the preset keeps it)."""
    images = "all" if p.max_train is None else f"{p.max_train:,}"
    side = p.resolution or proxy_config(kind_dataset(kind)).resolution
    return f"{images} training images x {p.epochs} epochs at {side} px"


@dataclass(frozen=True)
class ResolvedProxy:
    """What a run's proxy trainings get, after the precedence rule."""

    preset: str  # the preset the settings start from
    epochs: int
    max_train: int | None
    max_val: int | None
    resolution: int | None
    overridden: tuple[str, ...]  # settings an explicit option changed
    seed_sd: float | None  # the preset's measured seed spread; None if overridden or unmeasured
    seed_sd_source: str

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["overridden"] = list(self.overridden)
        return data


def resolve_proxy(dataset: str, name: str | None = None, *, epochs: int | None = None,
                  max_train: int | None = None, max_val: int | None = None,
                  resolution: int | None = None) -> ResolvedProxy:
    """The proxy settings of a run on ``dataset`` with ``--proxy name`` (None: the default)
    and the explicit options given (None: not given)."""
    kind = data_kind(dataset)
    name = DEFAULT_PRESET[kind] if name is None else name
    if name not in PROXY_PRESETS[kind]:
        raise ConfigError(f"--proxy: got {name!r}; on {dataset} choose one of "
                          f"{', '.join(PROXY_PRESETS[kind])}")
    preset = PROXY_PRESETS[kind][name]
    if resolution is not None and kind == "digits":
        raise ConfigError("--resolution: the digits are 8x8 images, proxied at 16 px; it "
                          "applies to CIFAR and image folders")
    given = {"epochs": epochs, "max_train": max_train, "max_val": max_val,
             "resolution": resolution}
    overridden = tuple(k for k, v in given.items() if v is not None and v != getattr(preset, k))
    values = {k: getattr(preset, k) if v is None else v for k, v in given.items()}
    if overridden:
        options = ", ".join("--" + k.replace("_", "-") for k in overridden)
        sd, source = None, f"not measured: {options} changed --proxy {name}"
    elif preset.seed_sd is None:
        sd, source = None, f"not measured yet for --proxy {name}"
    else:
        sd, source = preset.seed_sd, f"--proxy {name}, measured in {preset.measured_in}"
    return ResolvedProxy(preset=name, overridden=overridden, seed_sd=sd, seed_sd_source=source,
                         **values)
