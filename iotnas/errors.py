"""One exception hierarchy for everything a user can get wrong.

Every message says what was wrong and what to do about it. The CLI turns any
:class:`IotnasError` into one line on stderr and exit code 2; library code
translates foreign errors at its edge (``raise StoreError(...) from e``).
"""

from __future__ import annotations


class IotnasError(Exception):
    """Root of all iotnas errors: a mistake the user can fix."""


class ConfigError(IotnasError):
    """A study file, option or argument is malformed or inconsistent."""


class UnknownSpaceError(ConfigError):
    """A search-space name is not registered."""


class UnknownLawError(ConfigError):
    """A sampling law is not defined for the given space."""


class ArchError(ConfigError):
    """An architecture description (id, arguments, JSON) is invalid."""


class InvalidSampleError(ArchError):
    """A drawn model that cannot run (e.g. a layer with no channels): skipped, as the released data skips it."""


class InputSizeError(ConfigError):
    """A network cannot take images of the given size or channel count."""


class FormatError(IotnasError):
    """A number format is unknown, out of range, or cannot hold the given values."""


class DataError(IotnasError):
    """A dataset is missing, truncated, corrupt, or in an unexpected layout."""


class TrainingError(IotnasError):
    """Training cannot start or resume (bad checkpoint, bad settings)."""


class CheckpointError(TrainingError):
    """A checkpoint file is missing, unreadable, or belongs to another model."""


class LatencyError(IotnasError):
    """A latency measurement or prediction cannot be made."""


class AgentError(LatencyError):
    """The device agent is unreachable or answered with an error."""


class StoreError(IotnasError):
    """The study store cannot be opened, written, or belongs to another study."""


class SchemaVersionError(StoreError):
    """The store was written by a different, incompatible schema version."""


class OlderSchemaError(SchemaVersionError):
    """The store was written by an older iotnas and must be migrated before it is only read."""


class SearchError(IotnasError):
    """The search cannot proceed (for example: no candidate satisfies the constraints)."""


class ExportError(IotnasError):
    """A model cannot be exported as asked."""
