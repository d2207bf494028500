"""The report of an influence store (``python -m aggregate.report``): :func:`write_report`."""

from datatransfer.report.page import ReportSummary, write_report

__all__ = ["ReportSummary", "write_report"]
