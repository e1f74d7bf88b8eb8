"""ONNX export of a trained network, checked before it is written: with ONNX Runtime against
PyTorch's outputs when it is installed, else with ``onnx.checker``."""

from __future__ import annotations

import copy
import inspect
import io
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from evaluators.scratch.checkpoint import one_line
from space import UserError
from space.checks import check_int
from space.io import atomic_write

__all__ = ["OnnxError", "OnnxExport", "ONNX_OPSET", "export_onnx", "onnx_available"]

ONNX_OPSET = 17  # LayerNorm-era opset: every op of GhostNet/MobileNetV3, broad runtime support
_RTOL = 1e-3  # ONNX Runtime vs PyTorch: fp32 kernels differ only in summation order
_ATOL = 1e-4


class OnnxError(UserError):
    """An ONNX file that cannot be made: a bad argument, no onnx package, a file that fails its
    check, or outputs that differ from PyTorch's."""


class OnnxExport(NamedTuple):
    path: Path
    opset: int
    resolution: int  # input (N, 3, resolution, resolution) float32, normalised
    checked_with: str  # "onnxruntime" (outputs compared) or "onnx.checker" (structure only)
    max_abs_diff: float | None  # largest |ONNX Runtime - PyTorch| logit; None with the checker


def export_onnx(model: nn.Module, path: str | os.PathLike, *, resolution: int,
                opset: int = ONNX_OPSET) -> OnnxExport:
    """Write ``model`` (a copy in eval mode, fp32, on CPU) as ONNX with a dynamic batch axis:
    input ``images`` (N, 3, resolution, resolution) float32 normalised with ImageNet mean/std,
    output ``logits`` (N, classes). Then check it: with ONNX Runtime if installed (outputs on a
    batch of another size must match PyTorch's within a tolerance), else with
    ``onnx.checker``. The file appears at ``path`` only once it has passed. Needs the onnx
    package (torch's exporter does); raises :class:`OnnxError` without it."""
    check_int("resolution", resolution, minimum=8, error=OnnxError)
    check_int("opset", opset, minimum=17, error=OnnxError)
    if not onnx_available():
        raise OnnxError("exporting ONNX needs the onnx package (and onnxruntime to compare "
                        "outputs); install them with pip install 'ghostnas[onnx]'")
    path = Path(path)
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32,
                                    memory_format=torch.contiguous_format).eval()
    example = torch.randn(2, 3, resolution, resolution,
                          generator=torch.Generator().manual_seed(0))  # (2, 3, R, R)
    # The TorchScript-based exporter: the torch.export-based one needs onnxscript, which
    # is not a dependency; the one in use is chosen explicitly where torch offers both.
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own notice
        torch.onnx.export(model, (example,), buffer, input_names=["images"],
                          output_names=["logits"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          **kwargs)
    data = buffer.getvalue()
    checked_with, diff = _check(data, model, resolution, path)
    atomic_write(path, lambda fh: fh.write(data))
    return OnnxExport(path, opset, resolution, checked_with, diff)


def _check(data: bytes, model: nn.Module, resolution: int,
           shown: Path) -> tuple[str, float | None]:
    """(what checked the serialised model ``data``, largest logit difference or None)."""
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        x = torch.randn(3, 3, resolution, resolution,  # another batch size than exported
                        generator=torch.Generator().manual_seed(1))
        with torch.inference_mode():
            ref = model(x).numpy()  # (3, classes)
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        out = session.run(None, {"images": x.numpy()})[0]
        if out.shape != ref.shape:
            raise OnnxError(f"ONNX file {str(shown)!r}: output shape {out.shape} in ONNX "
                            f"Runtime, {ref.shape} in PyTorch")
        diff = float(np.abs(out - ref).max())
        tol = _ATOL + _RTOL * float(np.abs(ref).max())
        if not diff <= tol:
            raise OnnxError(f"ONNX file {str(shown)!r}: ONNX Runtime's outputs differ from "
                            f"PyTorch's by up to {diff:.3g} (tolerance {tol:.3g}); not written")
        return "onnxruntime", diff
    import onnx

    try:
        onnx.checker.check_model(data, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise OnnxError(f"ONNX file {str(shown)!r} fails onnx.checker: {one_line(exc, 200)}"
                        ) from None
    return "onnx.checker", None


def onnx_available() -> bool:
    """Whether :func:`export_onnx` can work: torch's exporter needs the onnx package."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True
