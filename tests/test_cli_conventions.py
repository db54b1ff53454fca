"""The ``salon`` command's conventions, tried as a user would (issue 12, "CLI conventions"):
``--version``, every subcommand's ``--help``, the exit codes, ``--json`` errors with stable
codes, ``SALON_PASSPHRASE_FILE``, one duration grammar, ``X list`` grammar with the old names
kept, whole links in a pipe, jittered reconnect back-off, shell completion, and an import
that needs no ``fcntl`` (Windows). Real ``salon`` subprocesses against a real server.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSPHRASE, SALON, SalonServer, SalonUser, free_port

from client.cli.main import build_parser
from client.core.backoff import Backoff
from client.core.errors import JSON_ERROR_CODES, ExitCode
from protocol.errors import ErrorCode

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@dataclass
class Town:
    server: SalonServer
    alice: SalonUser
    bob: SalonUser
    space_id: str
    link: str


@pytest.fixture(scope="module")
def town(server: SalonServer, module_user) -> Town:
    alice, bob = module_user("alice"), module_user("bob")
    created = alice.json("space", "create", "Town hall", "--server", server.url, "--as", "Alice")
    bob.json("join", created["link"], "--as", "Bob")
    return Town(server, alice, bob, created["space_id"], created["link"])


def json_error(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Under --json a failure is exactly one JSON object on stdout, and no 'error:' line."""
    where = f"exit {result.returncode} stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode != 0, where
    assert "Traceback" not in result.stderr, where
    assert "error:" not in result.stderr, where
    document = json.loads(result.stdout)  # raises on stray text or a second document
    assert set(document) == {"error"}, where
    assert set(document["error"]) == {"code", "message"}, where
    assert document["error"]["message"], where
    return dict(document["error"])


# -- --version and --help ------------------------------------------------------------------------


def test_version_comes_from_the_package_metadata(user):
    result = user("zoe").run("--version")
    assert result.stdout.strip() == f"salon {importlib.metadata.version('salon')}"


def command_paths() -> list[tuple[str, ...]]:
    """Every command and command group of the parser, as argument tuples."""
    found: list[tuple[str, ...]] = []

    def walk(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    found.append((*path, name))
                    walk((*path, name), child)

    walk((), build_parser())
    return found


def test_every_argument_has_a_description():
    def walk(path: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(f"{path} {name}", child)
            elif not isinstance(action, argparse._HelpAction):
                assert action.help, f"{path}: {action.dest} has no help"

    walk("salon", build_parser())
    assert len(command_paths()) > 30


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_help(user, path):
    out = user("zoe").run(*path, "--help").stdout
    lines = out.splitlines()
    usage_end = next(i for i, line in enumerate(lines) if not line.strip())
    purpose = lines[usage_end + 1]
    assert purpose.endswith(".") and purpose[0].isupper(), f"no one-line purpose: {out}"
    example = out.split("example:\n", 1)[1].splitlines()[0]
    assert "salon " in example, out
    # Each argument's own line carries its description (the same text as the parser's).
    assert "positional arguments:" in out or "options:" in out
    if path[0] not in ("serve", "sfu", "admin", "web", "completion"):
        for name in ("SALON_HOME", "SALON_PASSPHRASE ", "SALON_PASSPHRASE_FILE"):
            assert name in out, f"salon {' '.join(path)} --help does not mention {name}"


def test_top_help_has_the_exit_code_table_and_environment(user):
    out = user("zoe").run("--help").stdout
    table = out.split("exit codes:\n", 1)[1]
    for code in ExitCode:
        assert re.search(rf"^  {code.value}\s+\S", table, re.M), f"exit {code.value} missing"
    for name in ("SALON_HOME", "SALON_PASSPHRASE", "SALON_PASSPHRASE_FILE"):
        assert name in out
    for alias, canonical in (("members", "member"), ("rooms", "room")):
        assert re.search(rf"^\s+{alias}\s", out, re.M) and re.search(
            rf"^\s+{canonical}\s", out, re.M
        )


# -- exit codes ----------------------------------------------------------------------------------


def test_exit_codes_are_defined_once_and_documented():
    from client.call import client as call
    from client.core import webverify

    assert call.EXIT_ENDED == ExitCode.ENDED
    assert webverify.MATCHES == ExitCode.OK and webverify.DIFFERS == ExitCode.FAILED
    assert webverify.WebBuildError.exit_code == ExitCode.ENDED
    section = README.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| `(\d+)` \|", section, re.M)}
    assert documented == {code.value for code in ExitCode}


def test_exit_codes_of_real_failures(town, user):
    zoe = user("zoe")
    closed = f"http://127.0.0.1:{free_port()}"
    assert zoe.run("space", "create", "X", "--server", closed, check=False).returncode == 3
    assert zoe.run("frobnicate", check=False).returncode == ExitCode.USAGE
    assert town.alice.run("members", "No such space", check=False).returncode == ExitCode.USAGE
    wrong = {"SALON_PASSPHRASE": "wrong"}
    assert town.alice.run("space", "list", env=wrong, check=False).returncode == ExitCode.FAILED
    refused = town.bob.run("invite", "list", town.space_id, check=False)
    assert refused.returncode == ExitCode.FAILED


# -- --json errors -------------------------------------------------------------------------------


def test_json_errors_carry_stable_codes(town, user):
    zoe = user("zoe")
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = zoe.run("space", "create", "X", "--server", closed, "--json", check=False)
    assert json_error(unreachable)["code"] == "unreachable"
    assert unreachable.returncode == ExitCode.UNREACHABLE

    unknown = town.alice.run("members", "No such space", "--json", check=False)
    assert json_error(unknown)["code"] == "usage"
    assert "not in a space" in json_error(unknown)["message"]

    wrong = town.alice.run("space", "list", "--json", env={"SALON_PASSPHRASE": "x"}, check=False)
    assert json_error(wrong)["code"] == "wrong_passphrase"

    refused = town.bob.run("invite", "list", town.space_id, "--json", check=False)
    assert json_error(refused)["code"] == ErrorCode.FORBIDDEN

    bad_link = zoe.run("join", "garbage", "--json", check=False)
    assert json_error(bad_link)["code"] == "bad_link"

    # A command line that does not parse, --json among its words.
    unparsed = zoe.run("invite", "create", "--json", check=False)
    assert json_error(unparsed)["code"] == "usage"
    assert unparsed.returncode == ExitCode.USAGE

    # Without --json: the one 'error:' line on stderr, nothing on stdout.
    plain = town.alice.run("members", "No such space", check=False)
    assert plain.stdout == "" and plain.stderr.startswith("error: ")


def test_rate_limited_is_a_json_code(make_server, user):
    srv = make_server({"limits": {"space_creations_per_hour_per_address": 1}})
    zoe = user("zoe")
    zoe.json("space", "create", "First", "--server", srv.url)
    limited = zoe.run("space", "create", "Second", "--server", srv.url, "--json", check=False)
    error = json_error(limited)
    assert error["code"] == "rate_limited", error
    assert limited.returncode == ExitCode.FAILED


def test_readme_lists_every_json_error_code():
    section = README.split("### Errors under --json", 1)[1].split("\n#", 1)[0]
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert set(JSON_ERROR_CODES) <= listed
    assert {code.value for code in ErrorCode} <= listed


def test_commands_that_change_things_answer_in_json(server, user):
    carol, dave, erin = user("carol"), user("dave"), user("erin")
    made = carol.json("space", "create", "Guild", "--server", server.url, "--as", "Carol")
    space = made["space_id"]
    dave.json("join", made["link"], "--as", "Dave")
    erin.json("join", made["link"], "--as", "Erin")
    dave_fp = {m["display_name"]: m["fingerprint"] for m in carol.json("member", "list", space)}[
        "Dave"
    ]

    assert carol.json("role", space, "Dave", "moderator") == {
        "display_name": "Dave",
        "fingerprint": dave_fp,
        "role": "moderator",
    }
    room = carol.json("room", "create", space, "news", "--kind", "channel")
    granted = carol.json("room", "grant", space, "news", "Erin")
    assert granted["room_id"] == room["room_id"] and granted["publisher"] is True
    invite = carol.json("invite", "create", space, "--uses", "2")
    revoked = carol.json("invite", "revoke", space, invite["invite_id"])
    assert revoked == {"invite_id": invite["invite_id"], "revoked": True}
    profile = carol.json("profile", space, "--as", "Carol B.")
    assert profile["display_name"] == "Carol B." and profile["avatar"] == "unchanged"
    assert erin.json("leave", space) == {"space_id": space, "name": "Guild", "left": True}
    kicked = carol.json("kick", space, "Dave", "--ban")
    assert kicked["fingerprint"] == dave_fp and kicked["banned"] is True
    assert set(kicked) == {"display_name", "fingerprint", "banned", "revoked_invites"}
    # ... and their failures are JSON too.
    again = carol.run("kick", space, "Dave", "--json", check=False)
    assert json_error(again)["code"] == "usage"


def test_follow_json_ends_with_the_error_in_the_stream(server, user):
    """``read --follow --json`` is JSON Lines; when the follower is removed, the last line
    is the error object, and the exit code says it was refused."""
    import selectors

    fay, gus = user("fay"), user("gus")
    made = fay.json("space", "create", "Yard", "--server", server.url, "--as", "Fay")
    gus.json("join", made["link"], "--as", "Gus")
    fay.json("room", "create", made["space_id"], "general", "--kind", "chat")
    fay.json("send", made["space_id"], "general", "first")
    proc = subprocess.Popen(
        [str(SALON), "read", made["space_id"], "general", "--follow", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=gus.env(),
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=60), "the follower printed nothing"
        assert json.loads(proc.stdout.readline())["text"] == "first"
        fay.json("kick", made["space_id"], "Gus")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    last = json.loads(out.strip().splitlines()[-1])
    assert last["error"]["code"] == "removed", (out, err)
    assert proc.returncode == ExitCode.FAILED
    assert "error:" not in err


# -- SALON_PASSPHRASE_FILE -----------------------------------------------------------------------


def test_passphrase_file(town, tmp_path):
    secret = tmp_path / "passphrase"
    secret.write_text(f"{PASSPHRASE}\n")
    from_file = {"SALON_PASSPHRASE": None, "SALON_PASSPHRASE_FILE": str(secret)}
    spaces = town.alice.json("space", "list", env=from_file)
    assert [s["space_id"] for s in spaces] == [town.space_id]

    # Only the first line counts; a CRLF ending is stripped too.
    secret.write_text(f"{PASSPHRASE}\r\nsomething else\n")
    town.alice.json("space", "list", env=from_file)

    # SALON_PASSPHRASE wins over the file.
    secret.write_text("not the passphrase\n")
    town.alice.json("space", "list", env={"SALON_PASSPHRASE_FILE": str(secret)})
    wrong = town.alice.run("space", "list", "--json", env=from_file, check=False)
    assert json_error(wrong)["code"] == "wrong_passphrase"

    missing = {"SALON_PASSPHRASE": None, "SALON_PASSPHRASE_FILE": str(tmp_path / "nope")}
    line = town.alice.fail("space", "list", env=missing)
    assert "SALON_PASSPHRASE_FILE" in line and "nope" in line
    assert PASSPHRASE not in line
    unreadable = town.alice.run("space", "list", "--json", env=missing, check=False)
    assert json_error(unreadable)["code"] == "keystore"

    secret.write_text("\n")
    assert "empty" in town.alice.fail("space", "list", env=from_file)


def test_passphrase_file_creates_a_keystore(server, user, tmp_path):
    secret = tmp_path / "dana.pass"
    secret.write_text("dana's own words\n")
    dana = user("dana", passphrase="dana's own words")
    env = {"SALON_PASSPHRASE": None, "SALON_PASSPHRASE_FILE": str(secret)}
    dana.json("space", "create", "Den", "--server", server.url, env=env)
    assert [s["name"] for s in dana.json("space", "list")] == ["Den"]  # via SALON_PASSPHRASE


# -- durations -----------------------------------------------------------------------------------


def test_one_duration_grammar(town):
    before = time.time()
    invite = town.alice.json("invite", "create", town.space_id, "--expires", "2h")
    expires = time.mktime(time.strptime(invite["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
    expires -= time.timezone  # the string is UTC
    assert abs(expires - (before + 7200)) < 120
    # call --duration parses the same words (the space is unknown: parsing came first).
    for word in ("1m", "30s", "2h", "1d", "45"):
        line = town.alice.fail("call", "No such space", "room", "--duration", word)
        assert "not in a space" in line, (word, line)
    for word in ("1x", "0s", "-3", "1.5h", "soon"):
        line = town.alice.fail("call", "No such space", "room", "--duration", word)
        assert "duration" in line, (word, line)
        line = town.alice.fail("invite", "create", town.space_id, "--expires", word)
        assert "duration" in line, (word, line)


def test_call_duration_with_a_unit_ends_the_call(town):
    town.alice.json("room", "create", town.space_id, "desk", "--kind", "conference")
    started = time.monotonic()
    result = town.alice.run(
        "call",
        town.space_id,
        "desk",
        "--video",
        "none",
        "--audio",
        "none",
        "--duration",
        "2s",
        timeout=90,
    )
    took = time.monotonic() - started
    assert result.returncode == 0
    assert took >= 2, took


# -- grammar and pipes ---------------------------------------------------------------------------


def test_list_grammar_keeps_the_old_names(town):
    town.alice.json("room", "create", town.space_id, "general", "--kind", "chat")
    assert town.alice.json("member", "list", town.space_id) == town.alice.json(
        "members", town.space_id
    )
    rooms = town.alice.json("room", "list", town.space_id)
    assert "general" in {r["name"] for r in rooms}
    assert rooms == town.alice.json("rooms", town.space_id)
    assert [s["space_id"] for s in town.alice.json("space", "list")] == [town.space_id]


def test_invite_list_in_a_pipe_prints_whole_links(town):
    link = town.alice.json("invite", "create", town.space_id, "--uses", "3")["link"]
    assert len(link) > 60
    for columns in ("40", "200"):
        out = town.alice.run("invite", "list", town.space_id, env={"COLUMNS": columns}).stdout
        assert link in out.split(), f"COLUMNS={columns}: the link is cut:\n{out}"
        assert "…" not in out
    ids = town.alice.run("space", "list", env={"COLUMNS": "30"}).stdout
    assert town.space_id in ids.split()
    # Wide characters take two cells each: still nothing cut.
    town.alice.run("profile", town.space_id, "--as", "アリス・ワンダーランド・" * 2)
    members = town.alice.run("member", "list", town.space_id, env={"COLUMNS": "30"}).stdout
    assert "アリス・ワンダーランド・" * 2 + " (you)" in members and "…" not in members
    town.alice.run("profile", town.space_id, "--as", "Alice")


# -- reconnect back-off --------------------------------------------------------------------------


def test_backoff_is_capped_and_jittered():
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)

    backoff = Backoff(0.2, 5.0, rng=random.Random(7), sleep=fake_sleep)

    async def run() -> None:
        for _ in range(10):
            await backoff.wait()

    asyncio.run(run())
    nominal = [min(0.2 * 2**i, 5.0) for i in range(10)]
    for delay, top in zip(waited, nominal, strict=True):
        assert top / 2 <= delay <= top
    assert max(waited) <= 5.0 and waited[-1] >= 2.5  # capped, and it got there
    # Seeded: repeatable; another seed spreads the same schedule differently (the jitter).
    again = Backoff(0.2, 5.0, rng=random.Random(7))
    assert [again.next_delay() for _ in range(10)] == waited
    other = Backoff(0.2, 5.0, rng=random.Random(8))
    assert [other.next_delay() for _ in range(10)] != waited
    backoff.reset()
    assert 0.1 <= backoff.next_delay() <= 0.2


def test_follow_reconnects_with_the_backoff():
    """``read --follow``'s Follower waits the back-off's jittered delays between attempts
    (a server that is down: every attempt is refused), on a fake clock."""
    from client.core.chat import Follower
    from client.core.errors import Unreachable

    clock = [0.0]
    notes: list[str] = []
    attempts: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        clock[0] += seconds
        if len(attempts) >= 8:
            raise asyncio.CancelledError

    class Down:
        async def __aenter__(self) -> None:
            attempts.append(clock[0])
            raise Unreachable("cannot reach the server")

        async def __aexit__(self, *exc: object) -> None:
            return None

    backoff = Backoff(0.2, 5.0, rng=random.Random(1), sleep=fake_sleep)
    follower = Follower(Down, "general", 0, print, None, notes.append, backoff=backoff)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(follower.run())
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    expected = Backoff(0.2, 5.0, rng=random.Random(1))
    assert gaps == pytest.approx([expected.next_delay() for _ in gaps])
    assert len(notes) == len(attempts) and "reconnecting in" in notes[0]


# -- shell completion ----------------------------------------------------------------------------


def complete_bash(script: str, words: list[str]) -> list[str]:
    """What bash's completion offers for ``words`` (the last one being typed)."""
    program = textwrap.dedent(
        f"""\
        source {script}
        COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
        COMP_CWORD={len(words) - 1}
        _salon
        printf '%s\\n' "${{COMPREPLY[@]}}"
        """
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return sorted(result.stdout.split())


def test_bash_completion(user, tmp_path):
    script = tmp_path / "salon.bash"
    script.write_text(user("zoe").run("completion", "bash").stdout)
    assert complete_bash(str(script), ["salon", "ro"]) == ["role", "room", "rooms"]
    assert complete_bash(str(script), ["salon", "room", "l"]) == ["list"]
    assert complete_bash(str(script), ["salon", "room", "create", "S", "x", "--kind", ""]) == [
        "channel",
        "chat",
        "conference",
    ]
    assert "--expires" in complete_bash(str(script), ["salon", "invite", "create", "S", "--"])
    assert complete_bash(str(script), ["salon", "hand", "S", "R", ""]) == ["down", "up"]
    registered = subprocess.run(
        ["bash", "-c", f"source {script}; complete -p salon"], capture_output=True, text=True
    )
    assert "-F _salon salon" in registered.stdout


def test_zsh_completion(user, tmp_path):
    text = user("zoe").run("completion", "zsh").stdout
    assert text.startswith("#compdef salon") and "compdef _salon salon" in text
    zsh = shutil.which("zsh")
    if zsh is None:
        # CI installs zsh (.ci/run); elsewhere a missing shell is not the product's fault.
        if os.environ.get("CI"):
            pytest.fail("zsh is not installed (.ci/run installs it)")
        pytest.skip("zsh is not installed")
    script = tmp_path / "_salon"
    script.write_text(text)
    assert subprocess.run([zsh, "-n", str(script)], timeout=30).returncode == 0

    def offered(*words: str) -> str:
        # compadd and _files exist only inside a completion widget: these print what the
        # function offers; the tables and the function itself are the script's own.
        program = textwrap.dedent(
            f"""\
            compdef() {{ :; }}
            compadd() {{ [[ $1 == -- ]] && shift; print -r -- "$*"; }}
            _files() {{ print FILES; }}
            source {script}
            words=({" ".join(f"'{w}'" for w in words)})
            CURRENT={len(words)}
            _salon
            """
        )
        done = subprocess.run([zsh, "-f", "-c", program], capture_output=True, text=True)
        assert done.returncode == 0 and not done.stderr, done.stderr
        return done.stdout.strip()

    assert offered("salon", "room", "l") == "create list grant ungrant"
    assert offered("salon", "room", "create", "S", "x", "--kind", "") == "chat channel conference"
    assert "--expires" in offered("salon", "invite", "create", "S", "--").split()
    assert offered("salon", "send", "S", "R", "") == "FILES"


# -- Windows: no fcntl ---------------------------------------------------------------------------


NO_FCNTL = """
import fcntl as real, os, sys, types
sys.modules["fcntl"] = None  # "import fcntl" now fails, as on Windows
import client.cli.main
client.cli.main.build_parser()
# msvcrt as Windows has it, emulated with POSIX record locks: the keystore locks through it.
msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_NBLCK, msvcrt.LK_UNLCK = 2, 0
calls = []
def locking(fd, mode, nbytes):
    calls.append(mode)
    op = real.LOCK_EX | real.LOCK_NB if mode == msvcrt.LK_NBLCK else real.LOCK_UN
    real.lockf(fd, op, nbytes, 0, os.SEEK_CUR)
msvcrt.locking = locking
sys.modules["msvcrt"] = msvcrt
code = client.cli.main.main(["space", "list", "--json"])
assert calls == [2, 0], calls
sys.exit(code)
"""


def test_salon_imports_and_locks_without_fcntl(user):
    zoe = user("zoe")
    result = subprocess.run(
        [sys.executable, "-c", NO_FCNTL],
        capture_output=True,
        text=True,
        env=zoe.env(),
        stdin=subprocess.DEVNULL,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert (zoe.home / "keystore.lock").exists()
    blocked = subprocess.run(
        [sys.executable, "-c", "import client.core.keystore, fcntl"],
        capture_output=True,
        text=True,
        env=zoe.env(),
        cwd=ROOT,
    )
    assert blocked.returncode == 0
    source = (ROOT / "client" / "core" / "keystore.py").read_text(encoding="utf-8")
    assert not re.search(r"^import fcntl|^from fcntl", source, re.M)
    assert SALON.exists()
