"""``Arch``: the name of one network, either ``(space, law, id)`` or ``(space, explicit args)``.

A frozen value: validated on construction, round-trips through JSON, and has a stable
:attr:`Arch.key` that stores and caches can be keyed on. Sampled arguments are drawn
lazily (and cached) through the space registry.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Any

from iotnas.errors import ArchError
from iotnas.spaces import MAX_ID, Args, canonical_name, check_id, get_space

_HASH_CHARS = 16  # of the sha256 hex digest in explicit-argument keys: 64 bits, ample for a study


def canonical_json(args: Args) -> str:
    """Compact JSON with sorted keys (spec section 12): the form hashed and compared everywhere."""
    return json.dumps(args, sort_keys=True, separators=(",", ":"), allow_nan=False)


@dataclasses.dataclass(frozen=True)
class Arch:
    """One network of a search space.

    Build with ``Arch(space, law, id)`` for a sampled model, :meth:`from_args` for explicit
    arguments, or :meth:`parse` / :meth:`from_json` from text. ``space`` may be an alias
    (``random_net_densenet``); it is stored under its canonical name.

    Raises (on construction):
        UnknownSpaceError: unknown space (the message lists the known ones).
        UnknownLawError: the space has no such law (the message lists its laws).
        ArchError: the id is not an integer in ``[0, 2**32)``, or explicit arguments are malformed.
    """

    space: str
    law: str | None = None
    id: int | None = None
    #: Canonical JSON of explicit arguments; None for a sampled model. Use :meth:`from_args`.
    args_json: str | None = None

    def __post_init__(self) -> None:
        space = get_space(canonical_name(self.space))
        object.__setattr__(self, "space", space.name)
        if self.args_json is not None:
            if self.law is not None or self.id is not None:
                raise ArchError("an Arch has either (law, id) or explicit arguments, not both")
            try:
                args = json.loads(self.args_json)
            except (TypeError, ValueError) as e:
                raise ArchError(f"explicit arguments are not valid JSON: {e}") from None
            space.check_args(args)
            object.__setattr__(self, "args_json", canonical_json(args))
            return
        if self.law is None:
            raise ArchError(f"an Arch of space '{space.name}' needs a law and an id, or explicit arguments")
        space.law(self.law)
        object.__setattr__(self, "id", check_id(self.id))

    @classmethod
    def from_args(cls, space: str, args: Args) -> Arch:
        """An Arch with explicit arguments (validated against the space)."""
        try:
            text = canonical_json(args)
        except (TypeError, ValueError) as e:
            raise ArchError(f"explicit arguments must be plain JSON values: {e}") from None
        return cls(space, args_json=text)

    @property
    def is_sampled(self) -> bool:
        """True for ``(space, law, id)``; False for explicit arguments."""
        return self.args_json is None

    @property
    def args(self) -> Args:
        """The network's arguments (a fresh copy each time; sampling is cached)."""
        if self.args_json is not None:
            return json.loads(self.args_json)
        return json.loads(_sampled_json(self.space, self.law, self.id))

    @property
    def key(self) -> str:
        """Stable identifier: ``space/law/id``, or ``space/args/<sha256 prefix of canonical args>``."""
        if self.args_json is None:
            return f"{self.space}/{self.law}/{self.id}"
        digest = hashlib.sha256(self.args_json.encode()).hexdigest()[:_HASH_CHARS]
        return f"{self.space}/args/{digest}"

    def __str__(self) -> str:
        return self.key

    def to_dict(self) -> dict[str, Any]:
        """``{"space", "law", "id"}`` or ``{"space", "args"}``: the JSON form."""
        if self.args_json is None:
            return {"space": self.space, "law": self.law, "id": self.id}
        return {"space": self.space, "args": json.loads(self.args_json)}

    def to_json(self) -> str:
        """Compact, canonical JSON of :meth:`to_dict`."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Arch:
        """Inverse of :meth:`to_dict`.

        Raises:
            ArchError: not an object with ``space`` and either ``law``+``id`` or ``args``.
        """
        if not isinstance(data, dict) or "space" not in data:
            raise ArchError(f"an Arch must be a JSON object with a 'space' key, got {data!r}")
        keys = set(data)
        if keys == {"space", "args"}:
            return cls.from_args(data["space"], data["args"])
        if keys == {"space", "law", "id"}:
            return cls(data["space"], data["law"], data["id"])
        raise ArchError(
            f"an Arch object needs the keys space, law, id (or space, args), got {sorted(map(str, keys))}"
        )

    @classmethod
    def from_json(cls, text: str) -> Arch:
        """Inverse of :meth:`to_json`.

        Raises:
            ArchError: malformed JSON or a malformed Arch object.
        """
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ArchError(f"malformed Arch JSON ({e}); expected e.g. {{\"space\":\"densenet\",\"law\":\"s1\",\"id\":0}}") from None
        return cls.from_dict(data)

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Parse ``"space/law/id"`` (e.g. ``"mobilenetv2/s4/39"``) or an Arch JSON object.

        Raises:
            ArchError: the text is neither form.
        """
        if not isinstance(text, str):
            raise ArchError(f"expected an architecture string like 'mobilenetv2/s4/39', got {text!r}")
        text = text.strip()
        if text.startswith("{"):
            return cls.from_json(text)
        parts = text.split("/")
        if len(parts) != 3:
            raise ArchError(f"expected an architecture like 'mobilenetv2/s4/39' (space/law/id), got {text!r}")
        space, law, id_text = parts
        if law == "args":
            raise ArchError(f"{text!r} names explicit arguments by hash; give the Arch as JSON with its 'args'")
        return cls(space, law, parse_id(id_text))


def parse_id(text: str) -> int:
    """A model id from text: a non-negative decimal integer below 2**32.

    Raises:
        ArchError: anything else.
    """
    t = text.strip()
    if not t.isascii() or not t.isdigit():
        raise ArchError(f"model id must be a non-negative integer below 2**32, got {text!r}")
    return check_id(int(t))


@functools.lru_cache(maxsize=8192)
def _sampled_json(space: str, law: str, id: int) -> str:
    return canonical_json(get_space(space).sample(law, id))


__all__ = ["MAX_ID", "Arch", "canonical_json", "parse_id"]
