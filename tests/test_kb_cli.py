"""``ithelp kb reindex`` and ``ithelp check-config`` on the knowledge base's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main

ARTICLES = Path(__file__).parent / "data" / "kb" / "articles"


def _app_yaml(tmp_path: Path, folder: Path) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text(f"database:\n  url: sqlite+aiosqlite:///{tmp_path / 'kb.db'}\nknowledge:\n  folder: {folder}\n")
    return path


def test_check_config_points_at_the_broken_article_and_its_key(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "vpn.md").write_text("---\ntitle: VPN\n---\nbody\n")
    (folder / "printer.md").write_text("---\ntags: [printer]\n---\nno title\n")
    assert main(["check-config", str(_app_yaml(tmp_path, folder))]) == 1
    assert "knowledge.folder: printer.md: title: is missing; every article needs a title" in capsys.readouterr().out


def test_check_config_says_when_the_folder_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(_app_yaml(tmp_path, tmp_path / "nowhere"))]) == 1
    assert f"knowledge.folder: {tmp_path / 'nowhere'} is not a folder" in capsys.readouterr().out


def test_kb_reindex_indexes_the_folder_then_reports_nothing_changed(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _app_yaml(tmp_path, ARTICLES)
    assert main(["check-config", str(path)]) == 0
    assert main(["db", "upgrade", "--config", str(path)]) == 0
    assert main(["kb", "reindex", "--config", str(path)]) == 0
    assert "indexed: 70 added, 0 changed, 0 removed, 0 unchanged" in capsys.readouterr().out
    assert main(["kb", "reindex", "--config", str(path)]) == 0
    assert "indexed: 0 added, 0 changed, 0 removed, 70 unchanged" in capsys.readouterr().out
