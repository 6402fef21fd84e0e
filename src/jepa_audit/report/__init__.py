"""The audit report: summary.json, report.md and a self-contained report.html from results.jsonl."""

from .build import ReportError, load_results, write_report

__all__ = ["ReportError", "load_results", "write_report"]
