"""The registry of search spaces: one name (plus aliases) -> one :class:`Space`.

An unknown name raises :class:`~iotnas.errors.UnknownSpaceError` listing the known ones.
"""

from __future__ import annotations

import abc
import dataclasses
import operator
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from torch import nn

from iotnas.errors import ArchError, UnknownLawError, UnknownSpaceError
from iotnas.registry import Registry

#: Ids seed ``numpy.random.RandomState``, which takes 32-bit seeds.
MAX_ID = 2**32

#: Sampled arguments: a JSON-like value of plain ints, floats, lists and dicts
#: (a dict for every space except GoogLeNet, whose canonical form is a list of rows).
Args = Any


@dataclasses.dataclass(frozen=True, slots=True)
class IntRange:
    """Integers in ``[lo, hi)``: the upper bound is exclusive, as in ``numpy.randint``."""

    lo: int
    hi: int

    def __str__(self) -> str:
        return f"[{self.lo}, {self.hi})"


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """One of a fixed set of values, drawn uniformly."""

    values: tuple[int, ...]

    def __str__(self) -> str:
        return "{" + ", ".join(str(v) for v in self.values) + "}"


@dataclasses.dataclass(frozen=True)
class Law:
    """Base of every space's law: a named set of ranges. Subclasses add the ranges as fields."""

    name: str

    def ranges(self) -> dict[str, str]:
        """The law's ranges as ``{argument: "[lo, hi)"}``, for listing and docs."""
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "name"}


class Space(abc.ABC):
    """One family of networks: its laws, its sampler and its builder.

    Subclasses set :attr:`laws` and implement :meth:`_sample`, :meth:`check_args`
    and :meth:`_build`; the registry sets :attr:`name` and :attr:`aliases`.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    #: One-line description for listings.
    summary: ClassVar[str] = ""
    #: Law name -> law, in order.
    laws: ClassVar[Mapping[str, Law]] = {}

    @property
    def released_name(self) -> str:
        """The authors' name of the space (``random_net_<family>``), as in NetConfigs.json."""
        return self.aliases[0] if self.aliases else self.name

    def law(self, law: str) -> Law:
        """Look up a law by name.

        Raises:
            UnknownLawError: the space has no such law.
        """
        try:
            return self.laws[law]
        except (KeyError, TypeError):
            known = ", ".join(self.laws)
            raise UnknownLawError(
                f"space '{self.name}' has no law {law!r}; known laws: {known}"
            ) from None

    def sample(self, law: str, id: int) -> Args:
        """Draw the arguments of model ``(law, id)`` from a fresh ``RandomState(id)``.

        Never touches global random state; the same ``(law, id)`` always gives the same arguments.

        Raises:
            UnknownLawError: the space has no such law.
            ArchError: ``id`` is not an integer in ``[0, 2**32)``.
        """
        return self._sample(self.law(law), check_id(id))

    def build(self, args: Args, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        """Build the network for ``args`` (3x32x32 geometry; ``in_channels`` may differ).

        Raises:
            ArchError: ``args`` do not describe a valid network of this space.
        """
        self.check_args(args)
        return self._build(args, num_classes=num_classes, in_channels=in_channels)

    @abc.abstractmethod
    def _sample(self, law: Law, id: int) -> Args: ...

    @abc.abstractmethod
    def check_args(self, args: Args) -> None:
        """Raise :class:`ArchError` unless ``args`` are well-formed arguments of this space."""

    @abc.abstractmethod
    def _build(self, args: Args, *, num_classes: int, in_channels: int) -> nn.Module: ...

    def _bad(self, args: Args, why: str) -> ArchError:
        """The error for malformed explicit arguments."""
        return ArchError(f"invalid arguments for space '{self.name}' ({why}): {args!r}")


def check_id(value: Any) -> int:
    """``value`` as a model id: an integer in ``[0, 2**32)`` (bools and floats refused).

    Raises:
        ArchError: anything else.
    """
    if isinstance(value, bool):
        raise ArchError(f"model id must be an integer, got {value!r}")
    try:
        id = operator.index(value)
    except TypeError:
        raise ArchError(f"model id must be a non-negative integer below 2**32, got {value!r}") from None
    if not 0 <= id < MAX_ID:
        raise ArchError(f"model id must be in [0, 2**32) (it seeds numpy's RandomState), got {id}")
    return id


#: Every space, in listing order; written once, at import of :mod:`iotnas.spaces`.
SPACES: Registry[Space] = Registry(
    "search space", error=UnknownSpaceError, unknown="unknown search space {name!r}; known spaces: {known}"
)

S = TypeVar("S", bound=type[Space])


def register_space(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[S], S]:
    """Class decorator: register one instance of a :class:`Space` subclass under ``name`` and ``aliases``.

    Raises:
        ValueError: a name or alias is already taken (a programming error, caught at import).
    """
    store = SPACES.register(name, aliases=aliases)

    def decorate(cls: S) -> S:
        cls.name = name
        cls.aliases = tuple(aliases)
        store(cls())
        return cls

    return decorate


def canonical_name(name: str) -> str:
    """The registered name for ``name`` or one of its aliases.

    Raises:
        UnknownSpaceError: no space has this name.
    """
    return SPACES.canonical(name)


def get_space(name: str) -> Space:
    """The space registered under ``name`` (or an alias such as ``random_net_densenet``).

    Raises:
        UnknownSpaceError: no space has this name.
    """
    return SPACES.get(name)


def list_spaces() -> list[str]:
    """Registered space names, in registration order."""
    return list(SPACES.names())
