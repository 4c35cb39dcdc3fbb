"""Test reports of a job (``reports:`` in the pipeline): parsed into test cases, counted
for the run's ``TestReportRecorded`` and kept whole as a blob in the artifact store."""

from shared.reports.junit import (
    MAX_REPORT_BYTES,
    Report,
    TestCase,
    cases_from_json,
    parse_junit,
)

__all__ = ["MAX_REPORT_BYTES", "Report", "TestCase", "cases_from_json", "parse_junit"]
