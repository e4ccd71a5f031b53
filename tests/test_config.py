"""Run parameters: defaults, overrides and plain messages for bad values."""

import re

import pytest

from moopt.config import ParameterError, load_config


def test_default_file_is_valid(tmp_path):
    config = load_config("parameters/default.yml", project_dir=tmp_path)
    assert config.org_level == "sub_icb" and config.org_codes is None and config.themes is None
    assert config.store_path == tmp_path / "outputs" / "store" / "moopt.duckdb"


def test_command_line_overrides_win(tmp_path):
    config = load_config("parameters/default.yml", project_dir=tmp_path, overrides={
        "organisations": {"codes": "A1B,C2D", "level": "icb"}, "themes": "safety", "workers": 3})
    assert config.org_codes == ["A1B", "C2D"] and config.org_level == "icb"
    assert config.themes == ["safety"] and config.workers == 3


@pytest.mark.parametrize("override, message", [
    ({"organisations": {"level": "ccg_only"}}, "organisations.level 'ccg_only'"),
    ({"organisations": {"codes": ["../etc"]}}, "letters or digits"),
    ({"period": {"end": "Sept 2026"}}, "period.end"),
    ({"themes": ["Antimicrobials!"]}, "is not a theme id"),
    ({"workers": 0}, "workers"),
    ({"data": {"source": "files"}}, "data.epd"),
    ({"data": {"max_reject_share": 2}}, "max_reject_share"),
    ({"renderer": "pdf"}, "renderer"),
    ({"period": {"end_month": "2026-09"}}, "unknown period parameter(s) end_month"),
    ({"organisations": {"levle": "practice"}}, "unknown organisations parameter(s) levle"),
    ({"data": {"ingest_memory_limit": "lots"}}, "data.ingest_memory_limit"),
    ({"data": {"organisations": {"map": "m.csv", "eccg": "e.csv"}}}, "data.organisations is a practice"),
])
def test_bad_parameters_get_clear_messages(tmp_path, override, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        load_config("parameters/default.yml", project_dir=tmp_path, overrides=override)


def test_unknown_section_and_bad_yaml_name_the_file(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("organisation: {level: sub_icb}\n")
    with pytest.raises(ParameterError, match="bad.yml: unknown parameter"):
        load_config(bad, project_dir=tmp_path)
    bad.write_text("period: [unclosed\n")
    with pytest.raises(ParameterError, match="not valid YAML"):
        load_config(bad, project_dir=tmp_path)
    with pytest.raises(ParameterError, match="does not exist"):
        load_config(tmp_path / "missing.yml", project_dir=tmp_path)


def test_an_out_of_memory_error_is_not_reported_as_a_locked_store(monkeypatch, capsys):
    import duckdb

    from moopt import cli

    def run_out_of_memory(args):
        raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256.0 KiB")

    monkeypatch.setattr(cli, "cmd_indicators", run_out_of_memory, raising=False)
    parser = cli.parser()
    monkeypatch.setattr(cli, "parser", lambda: parser)
    for action in parser._subparsers._group_actions[0].choices.values():
        action.set_defaults(func=run_out_of_memory)
    assert cli.main(["indicators", "list"]) == 2
    err = capsys.readouterr().err
    assert "ran out of the memory" in err and "in use by another program" not in err
    assert not cli._is_duckdb_lock_error(duckdb.OutOfMemoryException("could not allocate block"))
    assert cli._is_duckdb_lock_error(duckdb.IOException("Could not set lock on file"))
