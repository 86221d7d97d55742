"""Reduced precision: a trained model's numbers stored in narrower formats.

* :mod:`iotnas.precision.emulate`: run a model as if its numbers were stored in a format;
* :mod:`iotnas.precision.grid`: accuracy in the study's formats, and the (e, m) grid's bisection;
* :mod:`iotnas.precision.finetune`: format-aware fine-tuning;
* :mod:`iotnas.precision.runner`: the search's precision stage, over the trained models of a study.

The number formats themselves live in :mod:`iotnas.formats`.
"""
