"""Progress of `rxguard run` (docs/local.md): lines read and screened, rate and ETA with
rich on a terminal; nothing on stderr when it is not one."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rxguard.local.orchestrator import BatchRun
from rxguard_tools.local_cli import RichProgress, main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "events" / "batches" / "01_shanghai_his_utf8.csv"


def test_the_progress_shows_lines_read_and_screened_with_a_rate_and_an_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a progress display on a (captured) terminal stream of 200 columns
    monkeypatch.setenv("COLUMNS", "200")
    stream = io.StringIO()
    shown = RichProgress(stream)
    # When a batch is read and half of it screened
    with shown.bar:
        shown.lines_read(1000)
        shown.batch(BatchRun(path=SAMPLE, key=SAMPLE.name), "prepared: 1000 lines, 2 chunks")
        shown.lines_screened(500)
        task = shown.bar.tasks[0]
        # Then the bar counts read and screened lines and has a rate
        assert (task.total, task.completed) == (1000, 500)
        assert "read 1,000" in task.description
        assert task.fields["rate"] != "-"
    text = stream.getvalue()
    assert "01_shanghai_his_utf8.csv: prepared: 1000 lines, 2 chunks" in text
    assert "ETA" in text and "500/1000" in text


def test_no_progress_on_stderr_when_it_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RXGUARD_ALERTS_CONFIG", '{"letters_enabled": false}')
    # Given stderr captured (not a terminal) / When a run completes
    assert main([str(SAMPLE), "--out", str(tmp_path / "out"), "--workers", "1"]) == 0
    # Then stderr is silent and stdout has the summary
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "State: " in captured.out
