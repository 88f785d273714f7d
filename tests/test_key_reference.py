"""The key reference (docs/config-keys.md) and the --help texts list every key the code has."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from ablate.data.__main__ import help_text as data_help
from ablate.data.config import DataConfig
from ablate.keydocs import render, rows
from ablate.schema import schema_keys

REPO = Path(__file__).resolve().parents[1]


def test_the_reference_in_docs_is_what_the_code_generates():
    # python -m ablate.keydocs > docs/config-keys.md after changing a field or its docstring
    assert (REPO / "docs" / "config-keys.md").read_text() == render()


def test_every_leaf_key_is_in_the_reference_with_its_documentation():
    keys = schema_keys()
    leaves = {k for k in keys if not any(o.startswith(k + ".") for o in keys)}
    listed = {key: doc for key, _, _, doc in rows()}
    assert set(listed) == leaves
    undocumented = sorted(k for k, doc in listed.items() if not doc.strip())
    assert not undocumented, f"fields without a docstring: {undocumented}"


def test_data_help_lists_every_data_key():
    text = data_help()
    for f in fields(DataConfig):
        assert f"  data.{f.name}: " in text, f.name


def test_every_data_key_the_readme_uses_exists():
    used = set(re.findall(r"\bdata\.([a-z_]+)\b", (REPO / "README.md").read_text()))
    names = {f.name for f in fields(DataConfig)}
    assert used and used <= names, sorted(used - names)
