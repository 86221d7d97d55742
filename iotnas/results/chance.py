"""Chance level: a trained model no better than guessing is recorded, flagged, and never promoted.

A training can end at chance (a learning rate that diverged, a budget too short to leave
warm-up, a format too narrow for the weights). Its accuracy says nothing about the
architecture, so successive halving, fronts, winners and export treat it as a failure
to learn, not as a ranked result.
"""

from __future__ import annotations

#: A model is at chance level when it closes less than this fraction of the gap between
#: guessing (1 / classes) and a perfect score: 19 % on 10 classes, 55 % on 2 (an untrained
#: network scores up to ~17 % on 10 classes).
CHANCE_MARGIN = 0.10


def chance_accuracy(num_classes: int) -> float:
    """The accuracy of guessing among ``num_classes`` balanced classes."""
    return 1.0 / max(1, int(num_classes))


def chance_ceiling(num_classes: int) -> float:
    """Accuracies at or below this are chance level."""
    guess = chance_accuracy(num_classes)
    return guess + CHANCE_MARGIN * (1.0 - guess)


def is_chance_level(accuracy: float | None, num_classes: int | None) -> bool:
    """Whether ``accuracy`` (a fraction) is no better than guessing; unknowns are not flagged."""
    if accuracy is None or num_classes is None or num_classes < 2:
        return False
    return float(accuracy) <= chance_ceiling(num_classes)
