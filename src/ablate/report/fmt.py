"""How the report writes numbers and tables: rounded only here, at the last moment, and always
half away from zero, so that a printed value is the stored one rounded the way a reader rounds by
hand."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from tabulate import tabulate

# Seed noise is ~0.002 on a loss near 3.5, i.e. ~0.05%: intervals need two decimals to show it.
CI_DIGITS = 2


def finite(x: Any) -> bool:
    """A finite number (numbers.Real also admits numpy scalars, which pandas hands back from
    its columns); a bool is not one."""
    if isinstance(x, bool):
        return False
    return isinstance(x, numbers.Real) and math.isfinite(x)


def rounded(x: float, digits: int) -> str:
    """``x`` to ``digits`` decimals, half away from zero, never "-0"."""
    d = Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if d == 0:
        d = abs(d)
    return f"{d:f}"


def signed(x: float, digits: int) -> str:
    s = rounded(x, digits)
    return s if s.startswith("-") else "+" + s


def fmt_pct(x: float, digits: int = 0, plus: bool = False) -> str:
    s = rounded(x, digits)
    if plus and not s.startswith("-"):
        s = "+" + s
    return s + "%"


def fmt_w(x: float) -> str:
    return signed(x, 3)


def fmt_num(x: Any, digits: int = 0, thousands: bool = True) -> str:
    if not finite(x):
        return "-"
    if digits == 0:
        return f"{int(round(x)):,}" if thousands else str(int(round(x)))
    return f"{x:,.{digits}f}" if thousands else f"{x:.{digits}f}"


def pipe(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    # disable_numparse: cells are already formatted strings; tabulate must not re-round them.
    # A "|" inside a label (architecture names are free text) would split the cell: escape it.
    cells = [[str(c).replace("|", "\\|") for c in row] for row in rows]
    return str(tabulate(cells, headers=list(headers), tablefmt="pipe", disable_numparse=True))


def bold(cell: str) -> str:
    return f"**{cell}**"
