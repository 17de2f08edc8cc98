"""The paper's whole pipeline, headless: per dataset (`pipeline`) and per suite (`suite`)."""

from .pipeline import results_markdown, run_protocol
from .suite import run_suite, suite_report

__all__ = ["results_markdown", "run_protocol", "run_suite", "suite_report"]
