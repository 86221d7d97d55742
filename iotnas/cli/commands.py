"""Imports every command-group module so that each registers itself on ``app``.

Each group lives in its own module (``iotnas/cli/<group>.py``) and adds its
commands to :data:`iotnas.cli.main.app` at import time.
"""

# One line per command group, in the order they appear in --help.
from iotnas.cli import spaces  # noqa: F401
from iotnas.cli import search  # noqa: F401
from iotnas.cli import formats  # noqa: F401
from iotnas.cli import train  # noqa: F401
from iotnas.cli import report  # noqa: F401
from iotnas.cli import latency  # noqa: F401
