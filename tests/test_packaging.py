"""Install: ``pip install salon`` is the server (no OpenCV, no numpy: the server never imports
them), ``salon[client]`` adds calls' media and story images; what our code imports directly
is declared and pinned (aioice exactly: rtc/aiortc_adapter.py patches it)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import urllib.request
from importlib.metadata import packages_distributions
from pathlib import Path

from conftest import SALON, until

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OURS = {"protocol", "spaces", "client", "sfu", "rtc"}
CLIENT_ONLY = {"cv2", "numpy"}


def names(requirements: list[str]) -> dict[str, str]:
    """distribution name (normalized) -> its requirement."""
    found = {}
    for requirement in requirements:
        name = re.split(r"[=<>!;\[ ]", requirement, maxsplit=1)[0]
        found[name.lower().replace("_", "-")] = requirement
    return found


CORE = names(PROJECT["dependencies"])
CLIENT = names(PROJECT["optional-dependencies"]["client"])


def third_party_imports(package: str) -> set[str]:
    """Top-level modules imported anywhere in ``package`` (functions included)."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in OURS}


def distribution(module: str) -> str:
    dists = packages_distributions().get(module)
    assert dists, f"{module} is imported but no installed distribution provides it"
    return dists[0].lower().replace("_", "-")


def test_the_server_needs_no_opencv_and_the_client_extra_adds_it() -> None:
    assert not {"opencv-python-headless", "numpy"} & set(CORE), CORE
    assert {"av", "numpy", "opencv-python-headless"} <= set(CLIENT), CLIENT
    # make test installs .[test], which brings the client's media too.
    assert "salon[client]" in PROJECT["optional-dependencies"]["test"]


def test_direct_imports_are_declared_and_pinned() -> None:
    for package in ("protocol", "spaces", "sfu", "rtc"):
        for module in third_party_imports(package):
            assert module not in CLIENT_ONLY, f"{package} imports {module}"
            dist = distribution(module)
            assert dist in CORE, f"{package} imports {module} ({dist}), not a core dependency"
    for module in third_party_imports("client"):
        dist = distribution(module)
        assert dist in CORE or dist in CLIENT, f"client imports {module} ({dist}), undeclared"
    for dist in ("aioice", "pylibsrtp", "av", "numpy", "prometheus-client"):
        requirement = {**CORE, **CLIENT}[dist]
        assert re.search(r"==\d", requirement), f"{requirement} is not pinned exactly"


async def test_salon_serve_runs_with_opencv_and_numpy_absent(tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for module in CLIENT_ONLY:
        (blocked / f"{module}.py").write_text(
            f"raise ModuleNotFoundError('{module} is not installed', name='{module}')\n"
        )
    path = os.pathsep.join([str(blocked), str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "SALON_ICE_HOSTS": "127.0.0.1"}
    check = subprocess.run(
        [sys.executable, "-c", "import cv2"], env=env, capture_output=True, text=True
    )
    assert "cv2 is not installed" in check.stderr  # the block works
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(SALON), "serve", "--port", "0", "--data", str(tmp_path / "data")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        await until(lambda: "listening on" in log_path.read_text(), "listening", timeout=30)
        url = re.search(r"listening on (http://\S+)", log_path.read_text())
        assert url is not None
        with urllib.request.urlopen(url.group(1) + "/health", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert "Traceback" not in log_path.read_text()
    for command in (["sfu", "--help"], ["story", "--help"], ["call", "--help"]):
        result = subprocess.run(
            [str(SALON), *command], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (command, result.stderr)
