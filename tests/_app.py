"""Launching the real app inside the test process (shared by the HTTP and browser tests)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from demo.pipeline import Analyzer
from demo.ui import build_ui, launch_kwargs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(analyzer: Analyzer | None = None, **guard) -> Iterator[tuple[str, Analyzer]]:
    """The app on a free port. Every test client is 127.0.0.1, so the per-client upload budget is raised
    unless ``guard`` sets it (the tests of the limits do)."""
    analyzer = analyzer or Analyzer()
    demo = build_ui(analyzer)
    port = free_port()
    guard = {"uploads_per_window": 10_000, "upload_bytes_per_window": 2**40, **guard}
    kwargs = launch_kwargs("127.0.0.1", port, share=False, **guard)
    demo.launch(prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield f"http://127.0.0.1:{port}/", analyzer
    finally:
        demo.close()
