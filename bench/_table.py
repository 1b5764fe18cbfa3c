"""A plain-text table for the benchmarks' reports: first column left-aligned, the rest right-aligned."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """``rows[0]`` is the header; a dashed rule goes under it. The first ``left`` columns align left."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if j < left else cell.rjust(w)
            for j, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths), *(line(row) for row in rows[1:])])
