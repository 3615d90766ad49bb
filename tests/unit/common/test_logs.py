"""Start-up helpers: log lines cannot carry control characters a sender chose."""

from __future__ import annotations

import logging

from common.logs import SafeFormatter


def test_control_characters_are_escaped_in_log_lines() -> None:
    record = logging.LogRecord(
        "dicom_node", logging.WARNING, __file__, 1, "calling AE %s", ("EV\x1b[31mIL\x07",), None
    )
    line = SafeFormatter("%(message)s").format(record)
    assert line == "calling AE EV\\x1b[31mIL\\x07"
    assert "\x1b" not in line and "\x07" not in line
