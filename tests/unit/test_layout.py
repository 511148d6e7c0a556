"""The repository layout: ``platform/`` must never shadow the standard library's ``platform``.

``python -m pytest`` and ``python -c`` put the repository root on ``sys.path``. A package named
``platform`` there would replace the stdlib module that torch, ray and transformers import.
"""
import importlib
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"sslab": "platform/sslab", "sslab.objectives": "objectives", "sslab.search_spaces": "search_spaces",
                "sslab.search_spaces.studies": "search_spaces/studies"}


def run_from_root(code: str) -> str:
    """Run ``python -c code`` with the repository root as the working directory; its stdout."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_there_is_no_platform_package():
    assert (ROOT / "platform" / "sslab" / "__init__.py").is_file()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_the_stdlib_platform_module_wins_from_the_repository_root():
    out = run_from_root("import platform; print(platform.system()); print(platform.__file__)")
    system, where = out.splitlines()
    assert system
    assert Path(where).parent == Path(sysconfig.get_paths()["stdlib"])


def test_sslab_and_its_objectives_import_from_the_repository_root():
    out = run_from_root("import sslab, sslab.objectives, platform; platform.system(); "
                        "print(sslab.__file__); print(','.join(sslab.objectives.available()))")
    where, names = out.splitlines()
    assert Path(where) == ROOT / "platform" / "sslab" / "__init__.py"
    assert names


def test_pyproject_maps_the_import_names_to_the_folders():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = project["tool"]["setuptools"]
    assert setuptools["package-dir"] == PACKAGE_DIRS
    assert set(setuptools["packages"]) == set(PACKAGE_DIRS)


@pytest.mark.parametrize("name, folder", PACKAGE_DIRS.items())
def test_each_import_name_resolves_to_its_folder(name, folder):
    module = importlib.import_module(name)
    assert Path(module.__file__).parent == ROOT / folder
