"""The committed example report (reports/quickstart) is what the current code makes of its table."""
import os
from pathlib import Path

from harness.report import build_report

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "reports" / "quickstart"


def test_committed_quickstart_report_is_up_to_date(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the report names its source relative to where it is built
    out = build_report(Path("reports/quickstart/results.parquet"), tmp_path / "quickstart")
    fresh = out.read_text().replace(str(tmp_path / "quickstart"), "reports/quickstart")
    committed = (EXAMPLE / "report.md").read_text()
    assert fresh == committed, (
        "reports/quickstart/report.md is stale: regenerate it with "
        "`harness report reports/quickstart/results.parquet --out reports/quickstart`")
    figures = sorted(p.name for p in (EXAMPLE / "figures").iterdir())
    assert figures == sorted(p.name for p in (out.parent / "figures").iterdir())
    assert all(os.path.getsize(EXAMPLE / "figures" / f) > 0 for f in figures)
