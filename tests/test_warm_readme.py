"""The README's claims that can drift: its TOML example shows the defaults of rag/config.py, and it names no
file outside the repository."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from rag.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def _flatten(table: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    out: dict[tuple[str, ...], object] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def test_readme_toml_example_shows_the_defaults():
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README lost its TOML example"
    shown = _flatten(tomllib.loads(blocks[0]))
    assert len(shown) >= 5
    defaults = Settings()
    for path, value in shown.items():
        obj = defaults
        for part in path:
            assert hasattr(obj, part), f"README TOML: {'.'.join(path)} is not a setting"
            obj = getattr(obj, part)
        assert obj == value, f"README TOML: {'.'.join(path)} = {value!r}, but the default is {obj!r}"


def test_readme_names_no_file_outside_the_repository():
    text = README.read_text(encoding="utf-8")
    assert not re.search(r"\.\./", text), "the README points outside the repository"
    for name in re.findall(r"`((?:docs|bench|tests|rag|index|ingest|blt)/[\w./-]+\.\w+)`", text):
        assert (README.parent / name).exists(), f"the README names {name}, which is not in the repository"
