"""Red team (issue 11): secrets in a PostgreSQL URL never reach an error line or a report.

``[storage] url`` and ``migrate-storage --to`` take a libpq-style URL, which asyncpg reads
for the password in three places: the user-info part, a ``password`` parameter, and — for
the client certificate's key — an ``sslpassword`` parameter (query keys are percent-decoded,
so ``pass%77ord`` is ``password`` too). Every message that names the URL masks them all.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import SALON, assert_one_line_error, free_port

from spaces.storage.postgres.database import masked_url


def test_every_password_in_the_url_is_masked() -> None:
    assert masked_url("postgresql://u@h/db?sslkey=/k.pem&sslpassword=s3cret&sslmode=require") == (
        "postgresql://u@h/db?sslkey=/k.pem&sslpassword=***&sslmode=require"
    )
    assert masked_url("postgresql://u@h/db?pass%77ord=s3cret") == (
        "postgresql://u@h/db?pass%77ord=***"
    )
    assert masked_url("postgresql://u@h/db?PASSWORD=s3cret&x=1") == (
        "postgresql://u@h/db?PASSWORD=***&x=1"
    )
    assert masked_url("postgresql://u:pw@h/db?sslpassword=s3cret") == (
        "postgresql://u:***@h/db?sslpassword=***"
    )


def test_serve_names_an_unreachable_url_without_its_ssl_key_passphrase(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://salon@127.0.0.1:{port}/salon?sslmode=disable&sslpassword=hunter2-key"
    web = tmp_path / "web"  # a built web app, so that the error is the only line
    web.mkdir()
    (web / "index.html").write_text("<!doctype html>", encoding="utf-8")
    config = tmp_path / "salon.toml"
    config.write_text(
        f'[server]\nport = 0\nweb_dir = "{web}"\n[storage]\nurl = "{url}"\n', encoding="utf-8"
    )
    result = subprocess.run(
        [str(SALON), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    line = assert_one_line_error(result)
    assert f"127.0.0.1:{port}/salon" in line and "sslpassword=***" in line, line
    assert "hunter2" not in result.stdout + result.stderr


def test_a_mistyped_database_url_is_refused_not_made_a_sqlite_file(tmp_path: Path) -> None:
    """``postgres-ql://salon:PASSWORD@host/salon`` (or ``postgresql+asyncpg://…``) is no
    PostgreSQL URL; it was taken for a SQLite path: the instance ran on a database of its
    own (several instances: each on its own, silently apart), in directories named after the
    password, readable by every local user. Any scheme but SQLite's and PostgreSQL's is
    refused, naming the scheme only."""
    web = tmp_path / "web"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html>", encoding="utf-8")
    for n, scheme in enumerate(("postgres-ql", "postgresql+asyncpg")):
        url = f"{scheme}://salon:hunter2-secret@127.0.0.1:{free_port()}/salon"
        config = tmp_path / f"salon{n}.toml"
        config.write_text(
            f'[server]\nport = 0\nweb_dir = "{web}"\n[storage]\nurl = "{url}"\n', encoding="utf-8"
        )
        try:
            result = subprocess.run(
                [str(SALON), "serve", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=tmp_path,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{scheme}://: the server ran (on SQLite)") from None
        assert result.returncode != 0
        line = assert_one_line_error(result)
        assert f"{scheme}://" in line and "postgresql://" in line, line
        assert "hunter2" not in result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["salon0.toml", "salon1.toml", "web"]
