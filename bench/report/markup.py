"""Small HTML building blocks: escaping, number formatting, tables, key/value lists."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NA = "n/a"


def esc(value: object) -> str:
    """``str(value)`` escaped for HTML text and quoted attribute values."""
    return html.escape(str(value), quote=True)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: object, digits: int = 3) -> str:
    """A number with ``digits`` decimals; ``n/a`` for None and NaN, ``inf`` for infinity.

    >>> fmt(1.23456), fmt(float("nan")), fmt(None), fmt(float("inf")), fmt(7, 0)
    ('1.235', 'n/a', 'n/a', 'inf', '7')
    """
    if value is None:
        return NA
    if not is_number(value):
        return str(value)
    number = float(value)  # type: ignore[arg-type]
    if math.isnan(number):
        return NA
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return f"{number:.{digits}f}"


def rate_text(value: float) -> str:
    """A rate-point value as the CSV shows it, compactly (``30`` rather than ``30.0``)."""
    return NA if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}"


class Cell:
    """A table cell: its text (escaped when rendered), an optional exact value and tooltip."""

    def __init__(
        self, text: str, *, value: object = None, title: str = "", cls: str = "", raw: bool = False
    ) -> None:
        self.text = text
        self.value = value
        self.title = title
        self.cls = cls
        self.raw = raw  # text is already HTML

    def render(self) -> str:
        attrs = ""
        if self.value is not None:
            attrs += f' data-value="{esc(repr(self.value))}"'
        if self.title:
            attrs += f' title="{esc(self.title)}"'
        if self.cls:
            attrs += f' class="{esc(self.cls)}"'
        body = self.text if self.raw else esc(self.text)
        return f"<td{attrs}>{body}</td>"


def num(value: object, digits: int = 3) -> Cell:
    """A right-aligned numeric cell carrying the exact value in ``data-value``."""
    exact = float(value) if is_number(value) else None  # type: ignore[arg-type]
    return Cell(fmt(value, digits), value=exact, cls="num")


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[Cell | str]],
    *,
    cls: str = "",
    caption: str = "",
    table_id: str = "",
) -> str:
    """An HTML table; plain strings in ``rows`` are escaped, ``Cell``s render themselves."""
    out = [f'<table class="{esc(cls)}"' + (f' id="{esc(table_id)}"' if table_id else "") + ">"]
    if caption:
        out.append(f"<caption>{esc(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = (c.render() if isinstance(c, Cell) else f"<td>{esc(c)}</td>" for c in row)
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def plain(value: Any) -> str:
    """A manifest value as readable text (JSON for containers)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def key_values(items: Mapping[str, Any] | Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    """A two-column table of names and values (both escaped)."""
    pairs = items.items() if isinstance(items, Mapping) else items
    body = "".join(
        f"<tr><th scope=row>{esc(key)}</th><td>{esc(plain(value))}</td></tr>"
        for key, value in pairs
    )
    return f'<table class="{esc(cls)}"><tbody>{body}</tbody></table>'


def section(section_id: str, title: str, body: str) -> str:
    """A top-level report section with an anchor."""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{body}</section>'


def note(text: str, cls: str = "note") -> str:
    """A paragraph of (escaped) explanatory text."""
    return f'<p class="{esc(cls)}">{esc(text)}</p>'
