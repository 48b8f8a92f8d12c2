"""Evaluation: regenerate from conditions, read the condition back, score, compare, report.

`run_evaluation(EvalSettings, samples)` -> `EvalResult`; `write_report(result, out_dir)`.
Sits above `generation` (it generates through `generate()`) and below `training`, `demo` and the
interfaces, which supply the samples (a dataset, shapes-world scenes). The names here are
imported on first use, so that one module of this package (`evaluation.grid` for the demo) does
not load the runner and every re-extracting preprocessor with it.
"""

from __future__ import annotations

from t2i_adapter.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "BASELINE_LABEL": "t2i_adapter.evaluation.samples",
        "EvalResult": "t2i_adapter.evaluation.runner",
        "EvalSample": "t2i_adapter.evaluation.samples",
        "EvalSettings": "t2i_adapter.evaluation.runner",
        "Variant": "t2i_adapter.evaluation.samples",
        "baseline": "t2i_adapter.evaluation.samples",
        "run_evaluation": "t2i_adapter.evaluation.runner",
    },
)
