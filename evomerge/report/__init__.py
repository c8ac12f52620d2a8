"""Reports of a run directory: PNG plots and a Markdown summary (``evomerge report``)."""

from evomerge.report.writer import Report, write_report

__all__ = ["Report", "write_report"]
