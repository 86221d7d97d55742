"""What a study found, and whether it counts: feasibility, study points, fronts and winners.

* :mod:`iotnas.results.limits`: the one feasibility rule (:class:`Limits`) and its reasons;
* :mod:`iotnas.results.chance`: the chance-level rule (a training no better than guessing);
* :mod:`iotnas.results.points`: one :class:`ModelPoint` per trained model and number format;
* :mod:`iotnas.results.fronts`: non-dominated fronts over study points;
* :mod:`iotnas.results.winners`: the best feasible (model, format) pairs of a study.

Only :mod:`limits` and :mod:`chance` are imported here: the study file and the store's records build on it,
while the other modules read the store.
"""

from iotnas.results.chance import chance_ceiling, is_chance_level
from iotnas.results.limits import Limits, Reason, Violation

__all__ = ["Limits", "Reason", "Violation", "chance_ceiling", "is_chance_level"]
