"""``python -m sibnet.recipe`` (and ``sibnet-recipe``): train the paper's Figure-5 set and assemble its weights.

The code is :mod:`sibnet.training.recipe`; this module is its command line's stable name.
"""

from __future__ import annotations

import sys

from sibnet.training.recipe import (
    assemble,
    build_parser,
    estimate_text,
    finished_summary,
    main,
    resolve_configs,
)

__all__ = ["assemble", "build_parser", "estimate_text", "finished_summary", "main", "resolve_configs"]

if __name__ == "__main__":
    sys.exit(main())
