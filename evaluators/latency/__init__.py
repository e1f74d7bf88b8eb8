"""Latency: measured on a device, or predicted from a per-part lookup table built on that device.

**Measured** (:func:`measure_latency`): the network in eval mode on an input of the deployment
shape, with a fixed thread count, after warm-up; each run timed on its own until the median is
known to within a target (or a time cap); on CPU every run is drift-corrected against a fixed
reference block run beside it, and every measurement holds a machine-wide lock so that two
GhostNAS measurements never overlap.

**Predicted** (:class:`LatencyTable`): a network is cut into parts (stem, each block, tail),
each a standalone module with its own input shape. :func:`build_table` measures the unique
parts of a set of architectures on the target device, and the whole networks too; a
prediction is ``scale * (sum of the parts' latencies) + offset_ms``, the pair fitted on the
whole networks, and a part missing from the table comes from a linear model over analytic
features fitted on the table's entries. A table is valid only for the settings it was built
with and refuses others.

One module per job:

- ``options``: the settings a latency is measured for (device, threads, batch, dtype,
  resolution), their checks and the device's name;
- ``timing``: timed runs with the adaptive stop, the machine-wide lock, the steady allocator,
  the thread-count context;
- ``measure``: :func:`measure_latency`, the drift correction's reference block,
  :class:`LatencyRecord`;
- ``parts``: :class:`Part` (a table key), cutting a network into parts, a part's module;
- ``predictor``: analytic features, the non-negative fallback fit, the calibration;
- ``table``: :class:`LatencyTable` (prediction, settings checks, the file format);
- ``build``: :func:`build_table`;
- ``errors``: the errors a user sees.
"""

from __future__ import annotations

from evaluators.latency.build import BuildProgress, build_table
from evaluators.latency.errors import LatencyError, LatencyTableError, LatencyTableMismatch
from evaluators.latency.measure import (
    REFERENCE_PART,
    LatencyRecord,
    measure_latency,
    reference_latency,
)
from evaluators.latency.options import DTYPES, device_name
from evaluators.latency.parts import PART_FIELDS, Part, part_module, parts
from evaluators.latency.predictor import FEATURES, Calibration
from evaluators.latency.table import (
    TABLE_FORMAT,
    TABLE_VERSION,
    LatencyTable,
    NetworkTiming,
    Prediction,
    TableSettings,
)
from evaluators.latency.timing import LOCK_ENV, lock_path, measurement_lock, steady_allocator

__all__ = [
    "LatencyError", "LatencyTableError", "LatencyTableMismatch", "LatencyRecord",
    "measure_latency", "measurement_lock", "lock_path", "device_name", "Part", "parts",
    "part_module", "TableSettings", "Calibration", "NetworkTiming", "Prediction", "BuildProgress",
    "LatencyTable", "build_table", "DTYPES", "PART_FIELDS", "FEATURES", "TABLE_FORMAT",
    "TABLE_VERSION", "LOCK_ENV", "steady_allocator", "reference_latency", "REFERENCE_PART",
]
