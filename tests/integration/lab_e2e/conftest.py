"""A failed lab test carries the gateways' recent journal, so a CI log alone can explain it."""

from __future__ import annotations

import pytest

from .support import Fabric


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" and report.failed:
        fabrics = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Fabric)]
        for fab in fabrics[:1]:
            try:
                report.sections.append(("gateway journals", fab.journal(lines=80)))
            except Exception as exc:  # the lab itself may be what failed
                report.sections.append(("gateway journals", f"unavailable: {exc!r}"))
    return report
