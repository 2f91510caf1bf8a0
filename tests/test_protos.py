"""The committed generated modules match the .proto files."""

from __future__ import annotations

from pathlib import Path

from harness_pool import _protos


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    generated = _protos.generate(tmp_path)
    assert generated, "no .proto file was compiled"
    committed = _protos.ROOT / "harness_pool" / "v1"
    for fresh in generated:
        mine = committed / fresh.name
        assert mine.exists(), f"{mine} is missing: run `make protos`"
        assert mine.read_text() == fresh.read_text(), (
            f"{mine.relative_to(_protos.ROOT)} is out of date with protos/: run `make protos`")
