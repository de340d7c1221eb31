"""A generic name -> class registry with lazy built-ins, entry-point plugins and suggestions."""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from bench.errors import UsageError

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """Where a registered class lives and what to tell a user who cannot import it."""

    name: str
    target: str  # "package.module:Attribute"
    install_hint: str = ""
    source: str = "built-in"  # or "plugin <distribution>"


def import_target(target: str) -> Any:
    """Import ``"package.module:Attribute"`` (dotted attributes allowed)."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Maps names to classes that are imported only when first asked for.

    Built-ins are registered as ``"module:attr"`` strings so that listing the registry never
    imports an optional dependency. Third parties register through the entry-point group; a
    plugin can never replace a built-in of the same name.

    >>> reg: Registry[object] = Registry("widgets", "bench.widgets")
    >>> reg.add("dict", "builtins:dict")
    >>> reg.load("dict") is dict
    True
    """

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._plugins_loaded = False

    def add(self, name: str, target: str, install_hint: str = "") -> None:
        """Register a built-in entry."""
        self._entries[name] = Entry(name, target, install_hint)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            if ep.name in self._entries:
                log.warning(
                    "ignoring plugin %s %r from %s: a built-in %s has that name",
                    self.kind[:-1],
                    ep.name,
                    dist,
                    self.kind[:-1],
                )
                continue
            self._entries[ep.name] = Entry(ep.name, ep.value, source=f"plugin {dist}")

    def names(self) -> list[str]:
        """All registered names, built-ins first in registration order."""
        self._load_plugins()
        return list(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry for ``name``; an unknown name raises with the closest matches."""
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries))
            raise UsageError(f"unknown {self.kind[:-1]} {name!r}.{hint} Known: {known}.") from None

    def load(self, name: str) -> type[T]:
        """Import and return the class registered as ``name``."""
        return import_target(self.entry(name).target)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries


def keyword_options(cls: type) -> list[str]:
    """The keyword-only constructor arguments of a class: its options."""
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def construct(cls: type[T], options: Mapping[str, object], what: str) -> T:
    """Create ``cls(**options)``, naming the accepted options when one is unknown or invalid."""
    accepted = keyword_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listing = ", ".join(accepted) or "none"
        raise UsageError(f"{what}: unknown option {', '.join(unknown)}; accepted: {listing}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what}: {exc}") from exc
