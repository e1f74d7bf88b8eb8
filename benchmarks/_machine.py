"""The machine a benchmark ran on, for its JSON record and its printout."""

from __future__ import annotations

import os
import platform


def machine() -> dict:
    import torch

    from evaluators.latency import device_name

    info = {"cpu": device_name("cpu"), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "load_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
