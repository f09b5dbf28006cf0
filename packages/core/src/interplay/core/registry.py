"""Name -> factory registries, one per domain.

Each domain package owns a :class:`DomainRegistry` with a ``models`` and a ``datasets``
:class:`Registry`. Factories are registered with a one-line description::

    REGISTRY = DomainRegistry("recsys")

    @REGISTRY.models.register("kgat", "KGAT: knowledge-graph attention network (Wang et al., 2019)")
    def kgat(**kwargs): ...

``create(name, **kwargs)`` builds an instance; an unknown name raises :class:`UnknownNameError`
listing the close matches, and keyword arguments the factory does not accept raise
:class:`ConfigError` naming them, so config typos never reach deep inside torch.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from interplay.core.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    description: str
    tags: tuple[str, ...] = ()


@dataclass
class Registry:
    """A named collection of factories (models or datasets) of one domain."""

    domain: str
    kind: str
    fallback: Registry | None = None  # consulted for names this registry lacks (core tasks)
    _entries: dict[str, Entry] = field(default_factory=dict)

    def register(self, name: str, description: str, *, tags: tuple[str, ...] = ()):
        """Decorator registering ``factory`` under ``name``; names are unique per registry."""
        if not description or "\n" in description:
            raise ValueError(f"{self.kind} '{name}' needs a one-line description")

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.domain} {self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, factory, description, tuple(tags))
            return factory

        return decorator

    def get(self, name: str) -> Entry:
        if name in self._entries:
            return self._entries[name]
        if self.fallback is not None and name in self.fallback:
            return self.fallback.get(name)
        names = self.names()
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(names) or "none registered"
        raise UnknownNameError(f"unknown {self.domain} {self.kind} '{name}'{hint} (known: {known})")

    def create(self, name: str, /, **kwargs: Any) -> Any:
        entry = self.get(name)
        check_kwargs(entry.factory, kwargs, what=f"{self.domain} {self.kind} '{name}'")
        return entry.factory(**kwargs)

    def _all(self) -> dict[str, Entry]:
        merged = dict(self.fallback._all()) if self.fallback is not None else {}
        merged.update(self._entries)
        return merged

    def names(self) -> list[str]:
        return sorted(self._all())

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._all().values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._all())

    def table(self) -> str:
        """The entries as an aligned two-column text table (name, description)."""
        if not len(self):
            return f"no {self.kind} registered in {self.domain} yet"
        width = max(len(n) for n in self.names())
        return "\n".join(f"{e.name:<{width}}  {e.description}" for e in self)


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], *, what: str) -> None:
    """Raise ConfigError when ``kwargs`` names parameters ``factory`` does not take."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, accepted, n=1)
            hints.append(f"'{k}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise ConfigError(
            f"{what} does not take parameter(s) {', '.join(hints)}; it accepts: {', '.join(accepted)}"
        )
    missing = [
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in kwargs
    ]
    if missing:
        raise ConfigError(f"{what} needs parameter(s) {', '.join(repr(m) for m in missing)}")


class DomainRegistry:
    """The models and datasets of one domain, plus where its YAML configs live."""

    def __init__(self, domain: str, configs_package: str | None = None) -> None:
        self.domain = domain
        self.models = Registry(domain, "models")
        self.datasets = Registry(domain, "datasets")
        # tasks (LightningModules); names a domain lacks fall back to core's generic tasks
        self.tasks = Registry(domain, "tasks", fallback=CORE_TASKS)
        # the importable package holding <name>.yaml configs, e.g. "interplay.recsys.configs"
        self.configs_package = configs_package or f"interplay.{domain}.configs"


# Generic tasks every domain can use; filled by interplay.core.train.task on import.
CORE_TASKS = Registry("core", "tasks")
