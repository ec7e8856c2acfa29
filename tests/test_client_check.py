"""Client/image agreement: the running environment matches the image's Python minor and every locked pin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components import client_check
from components.client_check import (
    ClientEnvironmentError,
    check_client_environment,
    enforce_client_environment,
    installed_versions,
    python_patch_note,
)
from components.config import ImageConfig, parse_stack_config
from components.lock import LOCK_PATH, PROJECT_DIR, read_lock

HERE = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
OTHER_MINOR = f"{sys.version_info.major}.{sys.version_info.minor + 1}.3"
OTHER_PATCH = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro + 1}"


def test_the_real_client_environment_matches_the_image_defaults() -> None:
    # The venv `make venv` builds, on the Python the image defaults to: nothing to report.
    default = parse_stack_config({"image": {"repository": "ghcr.io/acme/lsdb-dask"}, "verify": {"enabled": False}})
    assert default.image.python_version == ImageConfig.model_fields["python_version"].default
    assert check_client_environment(default.image.python_version) == []
    assert python_patch_note(default.image.python_version) is None


def test_versions_are_read_without_importing_the_packages() -> None:
    versions = installed_versions()
    assert {n: versions.get(n) for n in read_lock()} == read_lock()
    # In a fresh interpreter (this one has imported half the lock already): the check imports none of them.
    code = (
        "import sys; from components.client_check import check_client_environment as c; "
        f"assert c({HERE!r}) == []; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lsdb', 'hats', 'dask', 'distributed', "
        "'pyarrow', 'pandas', 'numpy', 's3fs', 'gcsfs', 'adlfs')))"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_an_altered_pin_is_caught_with_the_package_and_the_fix() -> None:
    lock = dict(read_lock())
    real = lock["dask"]
    lock["dask"] = "2026.7.0"
    problems = check_client_environment(HERE, lock)
    assert len(problems) == 1
    (p,) = problems
    assert p.startswith(f"dask {real} is installed in the client but docker/requirements.lock pins 2026.7.0: run ")
    assert "-m pip install -r requirements.txt" in p and "make venv" in p


def test_an_installed_version_that_drifted_is_caught() -> None:
    drifted = {**installed_versions(), "distributed": "2026.7.0"}
    (p,) = check_client_environment(HERE, installed=drifted)
    pinned = read_lock()["distributed"]
    assert p.startswith(f"distributed 2026.7.0 is installed in the client but docker/requirements.lock pins {pinned}")


def test_a_locked_package_missing_from_the_client_is_caught() -> None:
    versions = {n: v for n, v in installed_versions().items() if n != "bokeh"}
    (p,) = check_client_environment(HERE, installed=versions)
    assert p.startswith(
        f"bokeh is not installed in the client but docker/requirements.lock pins {read_lock()['bokeh']}"
    )


def test_equal_versions_spelled_differently_are_not_a_mismatch() -> None:
    assert check_client_environment(HERE, {"x": "1.0"}, installed={"x": "1.0.0"}) == []
    assert check_client_environment(HERE, {"x": "1.0"}, installed={"x": "1.0.post1"}) != []


def test_another_python_minor_is_caught_with_both_fixes() -> None:
    (p,) = check_client_environment(OTHER_MINOR, {})
    assert f"the client runs Python {HERE} but the image runs Python {OTHER_MINOR}" in p
    assert "image.pythonVersion" in p and f"pulumi config set --path image.pythonVersion {HERE}" in p
    minor = OTHER_MINOR.rsplit(".", 1)[0]
    assert f"run the program from a Python {minor} venv" in p


def test_both_mismatches_are_reported_together() -> None:
    lock = dict(read_lock())
    lock["pyarrow"] = "1.0.0"
    problems = check_client_environment(OTHER_MINOR, lock)
    assert len(problems) == 2
    assert "Python" in problems[0] and problems[1].startswith("pyarrow ")


def test_another_patch_release_is_a_note_not_a_problem() -> None:
    assert check_client_environment(OTHER_PATCH, {}) == []
    note = python_patch_note(OTHER_PATCH)
    assert note and "VersionMismatchWarning" in note and f"image.pythonVersion {HERE}" in note


def image(python_version: str = HERE, client_check: str = "error") -> ImageConfig:
    # A prebuilt image: its pythonVersion may be any release (a built one must be the pinned base image's).
    ref = "ghcr.io/acme/lsdb-dask@sha256:" + "0" * 64
    return ImageConfig(ref=ref, python_version=python_version, client_check=client_check)


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(client_check.pulumi.log, "warn", lambda msg, *a, **k: seen.append(msg))
    return seen


@pytest.fixture
def stale_lock(tmp_path) -> Path:
    lock = tmp_path / "requirements.lock"
    lock.write_text(LOCK_PATH.read_text().replace(f"dask=={read_lock()['dask']}\n", "dask==2026.7.0\n"))
    return lock


def test_error_mode_raises_naming_the_package_the_fix_and_the_switch(stale_lock, warnings) -> None:
    with pytest.raises(ClientEnvironmentError) as err:
        enforce_client_environment(image(client_check="error"), stale_lock)
    text = str(err.value)
    assert "dask " in text and "pins 2026.7.0" in text and "pip install -r requirements.txt" in text
    assert "pulumi config set --path image.clientCheck warn" in text
    assert err.value.problems == check_client_environment(HERE, read_lock(stale_lock))
    assert warnings == []


def test_warn_mode_logs_each_problem_and_goes_on(stale_lock, warnings) -> None:
    problems = enforce_client_environment(image(OTHER_MINOR, client_check="warn"), stale_lock)
    assert len(problems) == 2
    assert len(warnings) == 2 and all("image.clientCheck is warn" in w for w in warnings)
    assert any("Python" in w for w in warnings) and any("pins 2026.7.0" in w for w in warnings)


def test_a_matching_client_passes_silently_in_either_mode(warnings) -> None:
    for mode in ("error", "warn"):
        assert enforce_client_environment(image(client_check=mode)) == []
    assert warnings == []


def test_a_patch_difference_only_warns_even_in_error_mode(warnings) -> None:
    assert enforce_client_environment(image(OTHER_PATCH, client_check="error")) == []
    assert len(warnings) == 1 and "VersionMismatchWarning" in warnings[0]


def test_client_check_switch_is_validated() -> None:
    cfg = parse_stack_config({"image": {"repository": "r/x", "clientCheck": "warn"}, "verify": {"enabled": False}})
    assert cfg.image.client_check == "warn"
    with pytest.raises(Exception, match=r"image\.clientCheck"):
        parse_stack_config({"image": {"repository": "r/x", "clientCheck": "off"}, "verify": {"enabled": False}})
