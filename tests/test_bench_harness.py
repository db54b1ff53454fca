"""bench/_harness.py: the one percentile every bench uses (known answers), that no bench keeps
its own, and the shared ``salon serve`` start-up (a real server)."""

from __future__ import annotations

import ast
import math
import random
import statistics
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

from _harness import Server, percentile, ratio, summary, toml_text  # noqa: E402

BENCH_MODULES = sorted(p for p in BENCH.glob("*.py") if p.name != "_harness.py")
# Names a bench may not define or call: each is a percentile of its own.
OWN_PERCENTILE = ("percentile", "quantile", "median")


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([1, 2, 3, 4], 0.5, 2.5),  # the median of an even sample: the mean of the middle two
        ([4, 1, 3, 2], 0.25, 1.75),  # unsorted input; rank 0.75 between 1 and 2
        ([1, 2, 3, 4], 0.0, 1),
        ([1, 2, 3, 4], 1.0, 4),
        ([15, 20, 35, 40, 50], 0.4, 29.0),  # rank 1.6: 20 + 0.6 * (35 - 20)
        ([10, 20, 30, 40, 50], 0.95, 48.0),  # rank 3.8
        (list(range(1, 101)), 0.99, 99.01),  # not the maximum, as index int(q * n) gave
        ([7.0], 0.95, 7.0),
    ],
)
def test_percentile_known_answers(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_is_type_7_like_statistics_inclusive() -> None:
    rng = random.Random(12)
    for n in (2, 3, 10, 101):
        values = [rng.expovariate(1.0) for _ in range(n)]
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        for k in (1, 50, 95, 99):
            assert percentile(values, k / 100) == pytest.approx(cuts[k - 1])
        assert percentile(values, 0.5) == pytest.approx(statistics.median(values))


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 0.5))
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_summary_and_ratio() -> None:
    assert summary([50, 10, 40, 20, 30]) == {"p50": 30, "p95": 48.0, "n": 5}
    assert summary([1.0, 2.0], qs=(0.5, 0.99), digits=2) == {"p50": 1.5, "p99": 1.99, "n": 2}
    assert summary([]) == {"p50": None, "p95": None, "n": 0}
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(3.0, 0.0) is None


def test_toml_text_round_trips() -> None:
    config: dict[str, dict[str, Any]] = {
        "limits": {"requests_per_second": 1e9, "request_burst": 10},
        "server": {"a": "b"},
    }
    assert tomllib.loads(toml_text(config)) == config


def _own_percentiles(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            name = getattr(node, "name", "<lambda>")
            if any(word in name.lower() for word in OWN_PERCENTILE):
                found.append(f"defines {name}()")
        if isinstance(node, ast.Attribute) and any(w in node.attr for w in OWN_PERCENTILE):
            found.append(f"calls .{node.attr}")  # statistics.median, np.percentile, …
    return found


def _harness_names(tree: ast.Module) -> set[str]:
    return {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "_harness"
        for alias in node.names
    }


@pytest.mark.parametrize("path", BENCH_MODULES, ids=lambda p: p.name)
def test_bench_uses_the_harness_percentile_only(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert _own_percentiles(tree) == [], path.name
    imported = _harness_names(tree)
    assert imported, f"{path.name} does not use bench/_harness.py"
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if "percentile" in used:
        assert "percentile" in imported, f"{path.name} uses a percentile not from _harness"
    if "serve" in {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}:
        pytest.fail(f"{path.name} starts salon serve itself: use _harness.Server")


def test_the_check_finds_a_percentile_of_its_own() -> None:
    tree = ast.parse(
        "import statistics\n"
        "def pct(v, q): return sorted(v)[int(q * len(v))]\n"
        "def percentile(v, q): return pct(v, q)\n"
        "m = statistics.median([1])\n"
    )
    assert _own_percentiles(tree) == ["defines percentile()", "calls .median"]


def test_server_starts_with_overrides_and_stops(tmp_path: Path) -> None:
    server = Server(tmp_path / "ok", {"limits": {"requests_per_second": 1000.0}})
    with server:
        assert server.url == f"http://{server.host}:{server.port}"
        assert server.host == "127.0.0.1" and server.port > 0
        with urllib.request.urlopen(server.url + "/health", timeout=30) as answer:
            assert answer.status == 200
        proc = server.proc
    assert proc is not None and proc.returncode is not None
    assert (tmp_path / "ok" / "data" / "salon.db").exists()


def test_server_passes_its_config(tmp_path: Path) -> None:
    """A bad value in the overrides stops start-up, with the server's own error line."""
    server = Server(tmp_path / "bad", {"limits": {"requests_per_second": -1}})
    with pytest.raises(SystemExit, match="requests_per_second"):
        server.start(timeout=60)
