"""The neutral core: image naming, settings overrides, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from awm.core import naming
from awm.core.files import PRIVATE, atomic_path, atomic_write, default_mode
from awm.core.settings import AWMSettings, settings


def test_image_names_round_trip_through_one_definition() -> None:
    sid = naming.normalise("PantryPal: Recipe Planner!")
    assert sid == "pantrypal_recipe_planner"
    assert naming.normalise(sid) == sid
    ref = naming.image_ref(sid)
    repo, _, tag = ref.rpartition(":")
    assert (repo, tag) == (naming.image_repo(sid), naming.LATEST_TAG) == (f"awm/{sid}", "latest")
    assert naming.image_ref(sid, naming.QUARANTINE_TAG) == f"awm/{sid}:quarantined"
    assert naming.base_ref("abc") == f"{naming.BASE_REPO}:abc" == "awm/base:abc"
    remote = naming.registry_ref("127.0.0.1:5000/", naming.image_ref(sid, "1a2b"))
    assert remote == f"127.0.0.1:5000/awm/{sid}:1a2b"
    assert remote.split("/", 1)[1] == naming.image_ref(sid, "1a2b")


def test_settings_come_from_the_environment_and_keywords_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWM_CACHE_DIR", "~/some-cache")
    monkeypatch.setenv("AWM_DEBIAN_MIRROR", "http://mirror.example/debian")
    from_env = AWMSettings()
    assert from_env.cache_dir == Path.home() / "some-cache"
    assert from_env.debian_mirror == "http://mirror.example/debian"
    given = AWMSettings(cache_dir=Path("/srv/cache"), debian_mirror=None)
    assert (given.cache_dir, given.debian_mirror) == (Path("/srv/cache"), None)

    monkeypatch.setenv("AWM_CACHE_DIR", "")  # empty counts as unset
    monkeypatch.delenv("AWM_DEBIAN_MIRROR")
    assert AWMSettings().cache_dir == Path.home() / ".cache" / "awm"
    assert AWMSettings().debian_mirror is None


def test_settings_are_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings.cache_clear()
    try:
        monkeypatch.setenv("AWM_CACHE_DIR", str(tmp_path / "a"))
        first = settings()
        monkeypatch.setenv("AWM_CACHE_DIR", str(tmp_path / "b"))
        assert settings() is first
        assert first.cache_dir == tmp_path / "a"
    finally:
        settings.cache_clear()


def test_atomic_write_replaces_whole_and_keeps_the_usual_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.json"
    atomic_write(path, "old")
    atomic_write(path, b"new")
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == default_mode() == 0o666 & ~_umask()
    atomic_write(path, "secret", mode=PRIVATE)
    assert path.stat().st_mode & 0o777 == PRIVATE
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "state.json"
    atomic_write(path, "complete")

    def write_half() -> None:
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise error

    with pytest.raises(type(error)):
        write_half()
    assert path.read_text() == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
