"""How a benchmark script refuses bad input: as the product does, one line on stderr naming
the problem and the fix, exit status 2, no traceback (a failed training is not bad input and
keeps exit status 1)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from search.cli import EXIT_USAGE


def refuse(message: str) -> NoReturn:
    sys.stderr.write(f"{Path(sys.argv[0]).name}: error: {message}\n")
    raise SystemExit(EXIT_USAGE)
