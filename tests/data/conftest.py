"""Fixtures of the data tests: EMOTIC as the release and mat2py lay it out (tests/data/_release.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.data._release import Person, write_release_emotic


@pytest.fixture()
def release_emotic(tmp_path: Path) -> tuple[Path, dict[str, list[Person]]]:
    """``(root, people per split)``: Annotations.mat + emotic_pre/*.csv + JPEGs, written for this test."""
    root = tmp_path / "emotic"
    return root, write_release_emotic(root)
