"""`fleet export --merged DIR` never deletes what it did not write (fast: the destination checks)."""

from __future__ import annotations

import pytest

from fleet.core.records import ModelRecord
from fleet.ops.export import ExportError, _save, check_destination


def test_a_folder_of_other_files_is_refused_and_kept(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(ExportError, match="a folder with other files in it"):
        check_destination(home)
    with pytest.raises(ExportError):
        _save(tmp_path / "any-model", home)
    assert (home / "thesis.tex").read_text() == "years of work" and sorted(p.name for p in tmp_path.iterdir()) == [
        "home"
    ]


def test_new_empty_and_earlier_exports_are_accepted(tmp_path):
    check_destination(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty")
    earlier = tmp_path / "earlier"
    ModelRecord(task="text-classification", merged=True).write(earlier)
    check_destination(earlier)
    adapter = tmp_path / "adapter"
    ModelRecord(task="text-classification", base_model="minilm-l6", base_digest="0123456789abcdef01234567").write(
        adapter
    )
    with pytest.raises(ExportError):  # a specialist's adapter folder is not an export to replace
        check_destination(adapter)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        check_destination(tmp_path / "file")
