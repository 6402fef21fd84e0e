"""The audit report: summary.json, report.md and a self-contained report.html from results.jsonl."""

from .build import ReportError, ReportWriteError, load_results, write_report

__all__ = ["ReportError", "ReportWriteError", "load_results", "write_report"]
