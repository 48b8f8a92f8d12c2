"""Evaluation: regenerate from conditions, read the condition back, score, compare, report.

`run_evaluation(EvalSettings, samples)` -> `EvalResult`; `write_report(result, out_dir)`.
Sits above `generation` (it generates through `generate()`) and below `training`, `demo` and the
interfaces, which supply the samples (a dataset, shapes-world scenes).
"""

from t2i_adapter.evaluation.runner import EvalResult, EvalSettings, run_evaluation
from t2i_adapter.evaluation.samples import BASELINE_LABEL, EvalSample, Variant, baseline

__all__ = [
    "BASELINE_LABEL",
    "EvalResult",
    "EvalSample",
    "EvalSettings",
    "Variant",
    "baseline",
    "run_evaluation",
]
