"""Analysis of a history: Kafka log anomalies (Jepsen's), dependency cycles,
recovery bounds, performance statistics, and "a quiet run is not a passing
run". See design.md, "History format" and "Checker output".

    from checkers import check_history, exit_code
    from checkers.history import read_history
    result = check_history(read_history("store/latest"))
    sys.exit(exit_code(result))
"""
from .core import (DEFAULT_CHECKERS, UNKNOWN, available_checkers, check_history,
                   check_path, compose, exit_code, merge_valid)
from .history import History, HistoryError, Op, parse_events, parse_lines, read_history

__all__ = ["DEFAULT_CHECKERS", "UNKNOWN", "available_checkers", "check_history",
           "check_path", "compose", "exit_code", "merge_valid", "History",
           "HistoryError", "Op", "parse_events", "parse_lines", "read_history"]
