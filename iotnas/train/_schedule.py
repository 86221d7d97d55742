"""The learning-rate plan: linear warm-up, then linear decay to zero at the end of the budget.

A plan is defined by the step it starts at and the budget it ends at. Continuing a trained
model to a larger budget starts a new plan at the current step: the learning rate ramps
linearly, over one warm-up, from where the previous plan left it (near zero when it finished)
to the learning rate a fresh run with the larger budget would have at that step, and from then
on follows that run's decay exactly. A resumed run keeps its plan, so resuming is exact.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan:
    start_step: int  # first step of this plan (0 for a fresh run)
    start_lr: float  # learning rate at start_step (0.0 for a fresh run)
    total_steps: int  # the plan ends, at learning rate 0, after this many steps in all
    warmup_steps: int  # length of the (re-)warm-up ramp
    peak_lr: float

    def lr(self, step: int) -> float:
        """Learning rate for the optimiser step with 0-based index ``step``."""
        target = self.fresh(step + 1)
        if self.start_step == 0 or self.warmup_steps == 0:
            return target
        ramp = min(1.0, (step + 1 - self.start_step) / self.warmup_steps)
        return self.start_lr + (target - self.start_lr) * ramp

    def fresh(self, step: float) -> float:
        """The learning rate of an uninterrupted run with this budget, after ``step`` steps."""
        w, t = self.warmup_steps, self.total_steps
        if step < w:
            return self.peak_lr * step / w
        return self.peak_lr * max(0.0, (t - step) / max(1, t - w))

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}
