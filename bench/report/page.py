"""The page every report shares: the template (style, script) and its Content-Security-Policy."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from string import Template

from bench.provenance import bench_version
from bench.report.markup import esc


def template() -> str:
    return resources.files("bench.report").joinpath("template.html").read_text(encoding="utf-8")


def policy(text: str) -> str:
    """A Content-Security-Policy that runs only the template's own script (by its hash)."""
    match = re.search(r"<script>(.*?)</script>", text, flags=re.DOTALL)
    script = match.group(1) if match else ""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def navigation(body: str, entries: list[tuple[str, str]]) -> str:
    """Links to the sections of ``entries`` (id, label) that ``body`` has."""
    return " ".join(
        f'<a href="#{key}">{esc(label)}</a>' for key, label in entries if f'id="{key}"' in body
    )


def fill(*, title: str, subtitle: str, nav: str, body: str, footer: str) -> str:
    """The whole page: ``title``, ``subtitle`` and ``footer`` are plain text (escaped here);
    ``nav`` and ``body`` are HTML."""
    text = template()
    return Template(text).substitute(
        csp=policy(text),
        generator=f"bench {bench_version()}",
        title=esc(title),
        subtitle=esc(subtitle),
        nav=nav,
        body=body,
        footer=esc(footer),
    )
