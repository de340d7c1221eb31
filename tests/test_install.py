"""bench installed from a wheel works outside a checkout.

The wheel is built from a copy of the sources, installed into a fresh virtual environment in a
temporary directory, and run from another directory: the default rate sweeps and the dataset
manifests must come with the package. The fresh environment borrows this environment's
third-party packages through a path file (so no download is needed); bench itself comes only
from the wheel, which the test checks.
"""

from __future__ import annotations

import csv
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A fresh virtual environment with bench installed from its wheel, and its environment."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "bench", source / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HOME=str(tmp / "home"), BENCH_CACHE=str(tmp / "cache"), PIP_NO_INDEX="1")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheels"), "."],
         source, env)  # fmt: skip
    wheel = next((tmp / "wheels").glob("bench-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    purelib = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp,
             env).stdout.strip()
    )  # fmt: skip
    # This environment's packages, after the fresh one's own: plain path lines, so that the
    # path files in them (this checkout's editable install of bench) are not processed.
    (purelib / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], tmp, env)
    return venv, env


def test_the_wheel_ships_the_configuration(installed):
    venv, env = installed
    elsewhere = venv.parent / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    where = _run([str(venv / "bin" / "python"), "-c", "import bench.config as c; "
                  "print(c.__file__); print(c.checkout_root()); print(c.codec_defaults()['jpeg'])"],
                 elsewhere, env).stdout.splitlines()  # fmt: skip
    assert Path(where[0]).is_relative_to(venv)
    assert where[1] == "None"
    assert "rates" in where[2]


def test_an_installed_bench_runs_from_another_directory(installed):
    venv, env = installed
    bench = str(venv / "bin" / "bench")
    elsewhere = venv.parent / "work"
    images = elsewhere / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(images / f"{i}.png")

    listing = _run([bench, "list", "codecs"], elsewhere, env).stdout
    assert "jpeg2000" in listing and "jpeg " in listing
    assert "kodak" in _run([bench, "list", "datasets"], elsewhere, env).stdout

    _run([bench, "run", "--codecs", "jpeg", "--dataset", "folder", "--data-dir", "images",
          "--limit", "2", "--workers", "0"], elsewhere, env)  # fmt: skip
    (run_dir,) = (elsewhere / "results").iterdir()
    with (run_dir / "records.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    from bench.config import codec_defaults

    default_sweep = codec_defaults()["jpeg"]["rates"]
    assert len(rows) == 2 * len(default_sweep)
    assert {row["status"] for row in rows} == {"ok"}
    assert all(float(row["bpp"]) > 0 for row in rows)
    assert (run_dir / "report.html").is_file()
