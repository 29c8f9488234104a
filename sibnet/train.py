"""``python -m sibnet.train`` (and ``sibnet-train``): train any row of the paper's Tables 1 and 2.

The training code is the :mod:`sibnet.training` package; this module is its command line's stable name.
"""

from __future__ import annotations

import sys

from sibnet.training.cli import build_parser, dry_run_report, main, resolve_config
from sibnet.training.reproduce import reproduction_markdown, reproduction_rows
from sibnet.training.trainer import train

__all__ = [
    "build_parser",
    "dry_run_report",
    "main",
    "reproduction_markdown",
    "reproduction_rows",
    "resolve_config",
    "train",
]

if __name__ == "__main__":
    sys.exit(main())
