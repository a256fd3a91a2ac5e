"""``kitebench matrix report RUN_ID --html FILE`` opened in headless Chromium (Debian's package):
the DOM the page's script builds is asserted on (cells, statuses, chart, failures) and a
screenshot is kept in the test's artifacts (tmp_path; also ``$KITEBENCH_TEST_ARTIFACTS`` when set)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from kitebench import main
from launcher.campaign.store import Store
from tests.common import missing_prereq
from tests.store_support import attempt_row


def _chromium() -> str:
    found = os.environ.get("KITEBENCH_CHROMIUM") or shutil.which("chromium-headless-shell") \
        or shutil.which("chromium")
    if not found:
        missing_prereq("no headless Chromium (Debian package chromium; .ci/setup.d/36-chromium.sh)")
    return str(found)


def _browser(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120, check=False)


def test_html_report_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as s:
        rid = s.create_run(name="report <demo>", kind="matrix", backend="local", cells=6)
        rows = [("ok.py", "H100", "leaderboard", "success", None, None, 2e-5),
                ("ok.py", "A100", "leaderboard", "success", None, None, 3e-5),
                ("fast.py", "H100", "leaderboard", "success", None, None, 1e-5),
                ("bad.py", "H100", "leaderboard", "failed", "run", "check failed </script><b>x", None),
                ("bad.py", "A100", "leaderboard", "partial", "interrupted", "cancelled", None),
                ("ok.py", "H100", "test", "success", None, None, None)]
        for sub, gpu, mode, status, stage, err, score in rows:
            s.add_attempt(**attempt_row(rid, submission=sub, gpu=gpu, mode=mode, status=status,
                                        failure_stage=stage, error=err, score=score))
        s.update_run(rid, status="failed", finished_at="2026-01-01T00:00:00Z")
    page = tmp_path / "run.html"
    assert main(["matrix", "report", rid, "--html", str(page), "--store", url]) == 0
    text = page.read_text()
    assert "<b>x" not in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")

    dom = _browser(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    cells = re.findall(r'<td class="cell (\w+)" data-status="(\w+)"', dom.stdout)
    assert sorted(s for _, s in cells) == ["failed", "partial", "success", "success", "success",
                                           "success"]
    assert all(cls == st for cls, st in cells)
    assert "6 cells: 1 failed, 1 partial, 4 success" in dom.stdout
    assert 'data-chart="vectoradd_np on H100"' in dom.stdout and "(lower is better)" in dom.stdout
    chart = dom.stdout.split('data-chart="vectoradd_np on H100"')[1].split("</svg>")[0]
    assert chart.index("fast.py") < chart.index("ok.py")  # best first
    failures = dom.stdout.split('id="kb-failure-table"')[1].split("</table>")[0]
    assert failures.count("<tr data-key=") == 2 and "check failed &lt;/script&gt;&lt;b&gt;x" in failures

    shot = tmp_path / "report.png"
    res = _browser(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1200",
                   page.as_uri())
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    if os.environ.get("KITEBENCH_TEST_ARTIFACTS"):
        dest = Path(os.environ["KITEBENCH_TEST_ARTIFACTS"])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, dest / "campaign-report.png")


def test_report_of_unknown_run_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["matrix", "report", "nope", "--html", str(tmp_path / "x.html"), "--store", url]) == 2
