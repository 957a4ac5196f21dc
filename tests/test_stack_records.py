"""`fleet down` stops only what `fleet up` started; `fleet up` fails clearly and leaves nothing behind."""

from __future__ import annotations

import subprocess

import psutil
import pytest

from cli.stack import Service, Stack, StackError, down, stack_folder, up


def test_down_touches_only_the_processes_it_started(tmp_path):
    started = subprocess.Popen(["sleep", "300"], start_new_session=True)
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        folder = stack_folder(tmp_path / "home")
        folder.mkdir(parents=True)
        ours = Service("s3", started.pid, psutil.Process(started.pid).create_time(), pgid=started.pid)
        # a record whose PID now belongs to another process (its start time differs): never signalled
        reused = Service("prefect", unrelated.pid, psutil.Process(unrelated.pid).create_time() - 1000)
        Stack(str(folder), str(tmp_path / "pg"), "/nonexistent", 5432, None, [ours, reused]).save()
        assert down(tmp_path / "home", progress=lambda *_: None) == ["s3"]
        assert started.wait(10) is not None
        assert unrelated.poll() is None
        assert not (folder / "stack.json").exists()
        assert down(tmp_path / "home", progress=lambda *_: None) == []
    finally:
        for p in (started, unrelated):
            p.kill()
            p.wait()


def test_up_without_postgres_binaries_names_them_and_leaves_nothing(tmp_path):
    with pytest.raises(StackError, match=r"--pg-bin .*nothing-here.*apt-get install postgresql"):
        up(tmp_path / "home", pg_bin=str(tmp_path / "nothing-here"))
    assert not (stack_folder(tmp_path / "home") / "stack.json").exists()
