"""Benchmark harness: a study file in, a results store and a report out.

``bench`` validates a study (errors name the line), plans its runs, skips those the store already
holds and runs the rest locally or on Ray; ``Store`` is the SQLite results file; ``write_report``
renders the HTML/Markdown report.
"""
from .executor import DEFAULT_STORE, bench
from .store import Store
from .study import Study, StudyError, load_study, parse_study

__all__ = ["DEFAULT_STORE", "bench", "write_report", "Store", "Study", "StudyError", "load_study", "parse_study"]


def __getattr__(name: str):
    if name == "write_report":  # pandas and matplotlib load only when a report is written
        from .report import write_report

        return write_report
    raise AttributeError(name)
