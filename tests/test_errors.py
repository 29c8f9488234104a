"""The user-facing errors (sibnet.errors): one module, one-line messages."""

from __future__ import annotations

import ast
from pathlib import Path

from sibnet import errors
from sibnet.errors import USER_ERRORS, error_message

ROOT = Path(__file__).resolve().parents[1]


def test_error_message_is_one_line_even_from_a_dataloader_worker():
    worker = RuntimeError(
        "Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1\nsibnet.errors.DatasetError: cannot read image a/b.png: truncated'
    )
    assert error_message(worker) == "cannot read image a/b.png: truncated"
    assert error_message(ValueError("first\nsecond")) == "first"
    assert error_message(KeyError()) == "KeyError"


def test_every_error_class_of_the_library_lives_here():
    """No module of sibnet/ defines an exception class of its own: they are all in sibnet/errors.py."""
    defined_elsewhere = []
    for path in (ROOT / "sibnet").rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception", "Unavailable"))
                for b in node.bases
            ):
                defined_elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert defined_elsewhere == []
    own = [getattr(errors, n) for n in dir(errors) if isinstance(getattr(errors, n), type)]
    assert all(cls in USER_ERRORS for cls in own if issubclass(cls, Exception))
