"""ONNX export of a trained network, checked before it is written: with ONNX Runtime against
PyTorch's outputs when it is installed, else with ``onnx.checker``.

The file is written by torch's current exporter (``torch.onnx.export(..., dynamo=True)``, built
on ``torch.export``; it needs the onnxscript package). The TorchScript-based exporter, which
torch deprecates, is used only when that one is unavailable or fails; the reason is logged and
returned in :class:`OnnxExport`.
"""

from __future__ import annotations

import copy
import inspect
import io
import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from space import UserError
from space.checks import check_int, one_line
from space.io import atomic_write

__all__ = ["OnnxError", "OnnxExport", "ONNX_OPSET", "export_onnx", "onnx_available"]

ONNX_OPSET = 18  # the lowest the current exporter writes; broad runtime support
_RTOL = 1e-3  # ONNX Runtime vs PyTorch: fp32 kernels differ only in summation order
_ATOL = 1e-4
_LOG = logging.getLogger(__name__)
# Loggers of the exporter's internals, which log at warning level about what GhostNAS does not
# use (torchvision's operators, opset conversions); quietened while it runs.
_NOISY = ("torch.onnx", "torch.export", "torch._export", "onnxscript")


class OnnxError(UserError):
    """An ONNX file that cannot be made: a bad argument, no onnx package, a file that fails its
    check, or outputs that differ from PyTorch's."""


class OnnxExport(NamedTuple):
    path: Path
    opset: int
    resolution: int  # input (N, 3, resolution, resolution) float32, normalised
    checked_with: str  # "onnxruntime" (outputs compared) or "onnx.checker" (structure only)
    max_abs_diff: float | None  # largest |ONNX Runtime - PyTorch| logit; None with the checker
    exporter: str = "dynamo"  # "dynamo" (torch.export-based) or "torchscript" (the fallback)
    fallback_reason: str = ""  # why the TorchScript exporter was used; "" if it was not


def export_onnx(model: nn.Module, path: str | os.PathLike, *, resolution: int,
                opset: int = ONNX_OPSET) -> OnnxExport:
    """Write ``model`` (a copy in eval mode, fp32, on CPU) as ONNX with a dynamic batch axis:
    input ``images`` (N, 3, resolution, resolution) float32 normalised with ImageNet mean/std,
    output ``logits`` (N, classes). Then check it: with ONNX Runtime if installed (outputs on a
    batch of another size must match PyTorch's within a tolerance), else with
    ``onnx.checker``. The file appears at ``path`` only once it has passed. Needs the onnx
    package (torch's exporter does); raises :class:`OnnxError` without it."""
    check_int("resolution", resolution, minimum=8, error=OnnxError)
    check_int("opset", opset, minimum=ONNX_OPSET, error=OnnxError)
    if not onnx_available():
        raise OnnxError("exporting ONNX needs the onnx package (and onnxruntime to compare "
                        "outputs); install them with pip install 'ghostnas[onnx]'")
    path = Path(path)
    model = copy.deepcopy(model).to(device="cpu", dtype=torch.float32,
                                    memory_format=torch.contiguous_format).eval()
    example = torch.randn(2, 3, resolution, resolution,
                          generator=torch.Generator().manual_seed(0))  # (2, 3, R, R)
    data, exporter, reason = _export(model, example, opset)
    checked_with, diff = _check(data, model, resolution, path)
    atomic_write(path, lambda fh: fh.write(data))
    return OnnxExport(path, opset, resolution, checked_with, diff, exporter, reason)


def _export(model: nn.Module, example: torch.Tensor, opset: int) -> tuple[bytes, str, str]:
    """(serialised model, exporter used, why the fallback was needed or "")."""
    try:
        import onnxscript  # noqa: F401  (the current exporter's dependency)
    except ImportError:
        reason = "the onnxscript package is not installed (pip install 'ghostnas[onnx]')"
    else:
        try:
            return _export_dynamo(model, example, opset), "dynamo", ""
        except Exception as exc:  # torch.export and the translation raise many kinds
            reason = f"it failed ({type(exc).__name__}: {one_line(exc, 200)})"
    _LOG.warning("ONNX: torch's current exporter is not usable: %s; using the deprecated "
                 "TorchScript exporter instead", reason)
    return _export_torchscript(model, example, opset), "torchscript", reason


def _export_dynamo(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    levels = {name: logging.getLogger(name).level for name in _NOISY}
    try:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation and future notices
            program = torch.onnx.export(
                model, (example,), input_names=["images"], output_names=["logits"],
                opset_version=opset, dynamo=True, verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},))
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    return program.model_proto.SerializeToString()


def _export_torchscript(model: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    # chosen explicitly where torch offers both exporters
    kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters \
        else {}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own notice
        torch.onnx.export(model, (example,), buffer, input_names=["images"],
                          output_names=["logits"], opset_version=opset,
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          **kwargs)
    return buffer.getvalue()


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
    """Whether :func:`export_onnx` can work: both of torch's exporters need the onnx package."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True
