"""User-facing text names things a user can open; "seed" means the random seed only."""

from __future__ import annotations

import re

from readme_commands import REPO

# What the text once said about the document the tool reproduces ("the seed's setup", "the seed
# document's columns", "(seed LESSONS.md)"): words that mean nothing to a user and clash with seed=.
BANNED = re.compile(
    r"the seed's|seed document|seed table|seed LESSONS|seed_ra_ablation|LESSONS\.md", re.I
)


def _user_facing_files():
    yield REPO / "README.md"
    for folder, pattern in (
        ("docs", "*.md"),
        ("conf", "*.yaml"),
        ("matrix", "*.yaml"),
        ("src", "*.py"),
        ("benchmarks", "*"),
    ):
        yield from (
            p
            for p in (REPO / folder).rglob(pattern)
            if p.is_file() and p.suffix in (".md", ".yaml", ".py")
        )


def test_no_seed_for_anything_but_the_random_seed():
    found = []
    for path in _user_facing_files():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BANNED.search(line):
                found.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_files_the_docs_point_to_exist():
    missing = []
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)\)", path.read_text(encoding="utf-8")):
            if not (path.parent / target).exists():
                missing.append(f"{path.name} -> {target}")
    assert not missing, missing
