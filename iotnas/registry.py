"""One registry type for every table of named things: spaces, strategies, predictors, runtimes, formats.

Modelled on timm's ``register_model``, but a taken name is refused instead of overwritten.
Registries are written at import and never changed; every list of names is read from one.
A lazy entry lists a name before its module is imported; the module registers the object on
first use (a study names its strategy long before it runs one, and need not load its dependencies).
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, NamedTuple, TypeVar

from iotnas.errors import ConfigError, IotnasError

T = TypeVar("T")
_MISSING: Any = object()


class _Lazy(NamedTuple):
    """Stands for an object that ``module`` registers when imported."""

    module: str


class Registry(Generic[T]):
    """Names (and aliases) -> objects, in registration order.

    Args:
        kind: what the names name, for messages (``"search space"``).
        error: raised by :meth:`get` for an unknown name.
        unknown: its message; ``{kind}``, ``{name}`` and ``{known}`` (the names) are filled in.
        name_attr: attribute that receives each object's name on registration, so a class
            need not repeat the name it is registered under.
    """

    def __init__(self, kind: str, *, error: type[IotnasError] = ConfigError,
                 unknown: str = "unknown {kind} {name!r}; known: {known}", name_attr: str | None = None) -> None:
        self.kind = kind
        self._error = error
        self._unknown = unknown
        self._name_attr = name_attr
        self._entries: dict[str, T | _Lazy] = {}
        self._aliases: dict[str, str] = {}  # alias -> name

    def register(self, name: str, obj: T = _MISSING, *, aliases: tuple[str, ...] = ()) -> Any:
        """Register ``obj`` under ``name`` and ``aliases``; without ``obj``, a decorator that does.

        Raises:
            ValueError: a name or alias is taken. Checked on the call as well, so a duplicate
                decorator fails before the class under it is even built.
        """
        names = (name, *aliases)
        self._refuse_taken(names, name, fills=name)

        def store(obj: T) -> T:
            self._refuse_taken(names, obj, fills=name)
            if self._name_attr:
                setattr(obj, self._name_attr, name)
            self._entries[name] = obj
            self._aliases.update(dict.fromkeys(aliases, name))
            return obj

        return store if obj is _MISSING else store(obj)

    def register_lazy(self, name: str, module: str) -> None:
        """List ``name`` now; ``module``, imported on its first :meth:`get`, registers it."""
        self._refuse_taken((name,), module, fills=None)
        self._entries[name] = _Lazy(module)

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; raises the registry's error if unknown."""
        if name in self:
            return self._aliases.get(name, name)
        raise self._error(self._unknown.format(kind=self.kind, name=name, known=", ".join(self._entries)))

    def get(self, name: str) -> T:
        """The object registered under ``name`` or an alias, importing its module for a lazy entry."""
        name = self.canonical(name)
        entry = self._entries[name]
        if isinstance(entry, _Lazy):
            importlib.import_module(entry.module)
            if isinstance(self._entries[name], _Lazy):
                raise ImportError(f"{entry.module} does not register the {self.kind} {name!r} it is listed for")
        return self._entries[name]  # type: ignore[return-value]

    def names(self) -> tuple[str, ...]:
        """Registered names (aliases aside), in registration order."""
        return tuple(self._entries)

    def aliases(self) -> tuple[str, ...]:
        """Registered aliases, in registration order."""
        return tuple(self._aliases)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._entries or name in self._aliases
        except TypeError:  # unhashable, e.g. a list read from JSON
            return False

    def _refuse_taken(self, names: tuple[str, ...], new: object, *, fills: str | None) -> None:
        """Raise unless every name is free; the lazy entry of ``fills`` is free (it waits for ``new``)."""
        for name in names:
            holder = self._aliases.get(name, name)
            entry = self._entries.get(holder, _MISSING)
            if entry is _MISSING or (isinstance(entry, _Lazy) and name == fills):
                continue
            raise ValueError(
                f"{self.kind} name {name!r} is already registered to {holder!r} ({_describe(entry)}); "
                f"cannot register {_describe(new)} under it"
            )


def _describe(obj: object) -> str:
    """A class or function by its dotted name, anything else by its repr."""
    qualname = getattr(obj, "__qualname__", None)
    return f"{obj.__module__}.{qualname}" if isinstance(qualname, str) else repr(obj)
