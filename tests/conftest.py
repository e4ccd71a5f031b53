import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/factories.py

from factories import REALDATA  # noqa: E402 - after the path is set


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real NHS sample data not found at {REALDATA} (it lives beside the repository, "
                    "in ../shared/realdata)")
    return REALDATA


@pytest.fixture
def store(tmp_path):
    """A store in ``tmp_path`` holding the four practices of ``factories.PRACTICES``."""
    import factories
    from moopt.store import Store

    factories.write_map(tmp_path / "map.csv")
    s = Store(tmp_path / "store" / "moopt.duckdb")
    s.ingest_organisations(tmp_path / "map.csv")
    yield s
    s.close()
