"""Property tests: any command-line or CSV input gives a result or a clear error (exit 2),
never a crash and never a partial write."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, func, select

from worker.accounts import get_accounts
from worker.cli import main
from worker.config import get_settings
from worker.delivery.target_config import get_targets
from worker.errors import BadInput
from worker.models import TrackedSession
from worker.tracking.requests import read_csv_requests

CSV_CELLS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]),
                    max_size=30)


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_as_a_csv_parse_or_fail_clearly(tmp_path_factory: pytest.TempPathFactory,
                                                 data: bytes) -> None:
    path = tmp_path_factory.mktemp("csv") / "keys.csv"
    path.write_bytes(data)
    try:
        requests = read_csv_requests(path)
    except BadInput as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert all(3 <= len(r.session_key) <= 64 for r in requests)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["session_key", "email", "stock", "", "x"]), min_size=1,
                max_size=4),
       st.lists(st.lists(CSV_CELLS, max_size=5), max_size=6))
def test_structured_csvs_parse_or_fail_with_a_line_number(
    tmp_path_factory: pytest.TempPathFactory, header: list[str], rows: list[list[str]]
) -> None:
    path = tmp_path_factory.mktemp("csv") / "keys.csv"
    path.write_text(csv_text(header, rows), encoding="utf-8")
    try:
        read_csv_requests(path)
    except BadInput as exc:
        assert " line " in str(exc) or "empty" in str(exc)


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "BROKER_URL", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


ARGUMENT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["--meta", "--email", "--file", "--json", "--tracking", "--status",
                     "--limit", "--state", "--dead", "a=b", "ABC-123", "-1", "0", ""]),
)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["track", "untrack", "list", "show", "deliveries", "replay"]),
       st.lists(ARGUMENT, max_size=5))
def test_any_command_line_gives_a_result_or_exit_2(
    scratch: Path, capsys: pytest.CaptureFixture[str], command: str, args: list[str]
) -> None:
    database = scratch / "pave-tracker.db"
    before = _count(database)
    get_settings.cache_clear()
    get_targets.cache_clear()
    get_accounts.cache_clear()
    with pytest.raises(SystemExit) as exited:
        main([command, *args])
    _, err = capsys.readouterr()
    status = exited.value.code or 0
    assert status in (0, 2), err
    if status == 2:
        assert err.count("\n") == 1 and err.startswith("pave-tracker: error: ")
        assert _count(database) == before  # nothing written
    get_settings.cache_clear()


def _count(database: Path) -> int:
    if not database.exists():
        return 0
    engine = create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(TrackedSession))
                       or 0)
    except Exception:  # not migrated yet
        return 0
    finally:
        engine.dispose()
