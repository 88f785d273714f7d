"""The two commands at the top of README.md, as the tests and CI read them."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> tuple[str, str]:
    """(run command, test command): the first two ```bash blocks under '## Two commands'."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(blocks) >= 2, "README.md must hold the run and test commands under '## Two commands'"
    return blocks[0].strip(), blocks[1].strip()
