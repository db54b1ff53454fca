"""The deployment files (no Docker daemon here): the Dockerfile's stages and the files they
copy, the compose file's services and mounted configs (which load as valid configs and agree
on shared secrets), and the systemd units (systemd-analyze verify, when present, and their
ExecStart being real ``salon`` commands whose ``--help`` succeeds)."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import SALON

from spaces.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def dockerfile_stages() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(stage name, [(instruction, arguments)])], continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            found = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", arguments.strip(), re.IGNORECASE)
            assert found, line
            stages.append((found.group(2), []))
        else:
            assert stages, f"{line!r} before FROM"
            stages[-1][1].append((instruction, arguments.strip()))
    return stages


def salon_help(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``salon ARGS --help``; its help also names every option ARGS use (argparse would
    print help before complaining of an unknown one)."""
    result = subprocess.run(
        [str(SALON), *args, "--help"], capture_output=True, text=True, timeout=60
    )
    for option in (a for a in args if a.startswith("--")):
        assert option in result.stdout, (args, option)
    return result


def test_dockerfile_is_multi_stage_with_a_node_stage_and_a_small_runtime() -> None:
    stages = dockerfile_stages()
    names = [name for name, _ in stages]
    assert names == ["web", "build", "runtime"]
    first_lines = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM node:\S+ AS web$", first_lines, re.MULTILINE)
    assert re.search(r"^FROM python:\S+-slim\S* AS runtime$", first_lines, re.MULTILINE)
    by_name = dict(stages)
    assert any("npm ci" in args for op, args in by_name["web"] if op == "RUN")
    assert any("scripts/build.mjs" in args for op, args in by_name["web"] if op == "RUN")
    # COPY sources exist in the context (or come from an earlier stage).
    ignored = (ROOT / ".dockerignore").read_text().split()
    for name, instructions in stages:
        for op, args in instructions:
            if op != "COPY":
                continue
            parts = shlex.split(args)
            if parts[0].startswith("--from="):
                assert parts[0].removeprefix("--from=") in names[: names.index(name)]
                continue
            for source in parts[:-1]:
                assert (ROOT / source).exists(), source
                assert source.rstrip("/") not in ignored, source
    # The runtime copies the venv only: no node, no compiler, no pip install there.
    runtime = by_name["runtime"]
    assert not any(op == "RUN" and ("pip" in a or "npm" in a) for op, a in runtime)
    entrypoint = next(a for op, a in runtime if op == "ENTRYPOINT")
    command = next(a for op, a in runtime if op == "CMD")
    assert yaml.safe_load(entrypoint) == ["salon"]
    args = yaml.safe_load(command)
    assert args[0] == "serve" and salon_help(args).returncode == 0
    assert "/ready" in next(a for op, a in runtime if op == "HEALTHCHECK")


def test_compose_has_the_server_an_sfu_coturn_and_postgresql() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"server", "server-2", "sfu", "coturn", "postgres"}
    assert services["server"]["build"]["dockerfile"] == "Dockerfile"
    assert (DEPLOY / services["server"]["build"]["context"] / "Dockerfile").is_file()
    for name in ("server", "server-2", "sfu"):
        assert salon_help(services[name]["command"]).returncode == 0, name
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).is_file(), source
            else:
                assert source in compose["volumes"], source
    # Media needs many UDP ports: the SFU node and coturn use the host's network.
    assert services["sfu"]["network_mode"] == "host"
    assert services["coturn"]["network_mode"] == "host"
    assert services["server"]["ports"] == ["127.0.0.1:8080:8080"]
    # Two instances of one image and one config on one database, each on its loopback port
    # for the proxy to balance (README "Two instances on PostgreSQL").
    second = services["server-2"]
    assert second["image"] == services["server"]["image"] and "build" not in second
    assert second["command"] == services["server"]["command"]
    assert second["ports"] == ["127.0.0.1:8082:8080"]
    assert "./salon.toml:/etc/salon/salon.toml:ro" in second["volumes"]
    assert second["depends_on"]["postgres"]["condition"] == "service_healthy"

    server, node = load_config(DEPLOY / "salon.toml"), load_config(DEPLOY / "sfu.toml")
    assert server.server.public_url.startswith("https://")  # behind the TLS proxy
    assert not server.sfu.enabled and server.sfu.node_secret == node.sfu.node_secret
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert server.storage.url == f"postgresql://salon:{password}@postgres:5432/salon"
    turn = (DEPLOY / "turnserver.conf").read_text()
    assert f"static-auth-secret={server.ice.turn_secret}\n" in turn
    published = [f"http://{s['ports'][0].rsplit(':', 1)[0]}" for s in (services["server"], second)]
    assert node.sfu.server_urls == published  # the node registers with both instances


@pytest.mark.parametrize("unit", ["salon.service", "salon-sfu.service"])
def test_systemd_units(unit: str, tmp_path: Path) -> None:
    path = DEPLOY / "systemd" / unit
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    exec_start = shlex.split(parser["Service"]["ExecStart"])
    assert exec_start[0] == "/opt/salon/bin/salon"
    result = salon_help(exec_start[1:])
    assert result.returncode == 0, result.stderr
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    local = path.read_text().replace("/opt/salon/bin/salon", str(SALON.resolve()))
    local = re.sub(r"^(User|Group)=salon$", r"\1=root", local, flags=re.MULTILINE)
    (tmp_path / unit).write_text(local)
    checked = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr
