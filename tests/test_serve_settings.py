"""Absurd settings are refused as they load, in one line naming the setting, the value and its range (exit 2
from the CLI); every number setting has a declared range; a UTF-8 API key matches a UTF-8 client."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import httpx
import pytest

from rag.config import RANGES, ConfigError, Settings, load_settings
from rag.serve import ServeOptions, start_in_thread


def number_settings() -> dict[str, object]:
    """ "section.field" -> default, for every int and float setting."""
    out: dict[str, object] = {}
    defaults = Settings()
    for f in dataclasses.fields(defaults):
        section = getattr(defaults, f.name)
        if not dataclasses.is_dataclass(section):
            continue
        hints = get_type_hints(type(section))
        for g in dataclasses.fields(section):
            if hints[g.name] in (int, float):
                out[f"{f.name}.{g.name}"] = getattr(section, g.name)
    return out


def test_every_number_setting_has_a_range_holding_its_default():
    numbers = number_settings()
    assert set(numbers) == set(RANGES), "declare a range in rag.config.RANGES for each number setting"
    for name, default in numbers.items():
        low, high = RANGES[name]
        assert low <= default <= high, (name, default)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"retrieval": {"k": -1}}, "command line [retrieval]: k = -1 is out of range: it must be from 1 to 1,000"),
        ({"retrieval": {"k": 10**9}}, "k = 1000000000 is out of range"),
        ({"ollama": {"temperature": -1}}, "[ollama]: temperature = -1.0 is out of range: it must be from 0 to 2"),
        ({"mlx": {"prompt_tokens": 10**12}}, "prompt_tokens = 1000000000000 is out of range"),
        ({"mlx": {"top_p": float("inf")}}, "top_p = inf is out of range"),
        ({"serve": {"queue_depth": 0}}, "queue_depth = 0 is out of range: it must be from 1 to 100,000"),
        ({"retrieval": {"k": 4.5}}, "k: 4.5 is not a valid int"),
    ],
)
def test_out_of_range_settings_are_refused_in_one_line(overrides, says):
    with pytest.raises(ConfigError) as e:
        load_settings(overrides=overrides, environ={})
    assert says in str(e.value) and "\n" not in str(e.value)


def test_environment_and_file_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match=r"environment \[mlx\]: temperature = nan is out of range: it must be"):
        load_settings(environ={"SHVAYAMBHU_MLX_TEMPERATURE": "nan"})
    cfg = tmp_path / "config.toml"
    cfg.write_text("[memory]\ndecay_per_hour = 1.5\n")
    with pytest.raises(ConfigError, match=r"config.toml \[memory\]: decay_per_hour = 1.5 is out of range"):
        load_settings(cfg, environ={})
    cfg.write_text("[retrieval]\nk = 1000\nalpha = 0\n")
    assert load_settings(cfg, environ={}).retrieval.k == 1000  # the ends of a range are in it


def test_the_cli_exits_2_with_one_line(run_cli, tmp_path, monkeypatch):
    for k in ("0", "-5"):
        code, out, err = run_cli("search", "-k", k, "immune system")
        assert code == 2 and not out and "-k" in err, (k, err)
    cfg = tmp_path / "config.toml"
    cfg.write_text("[retrieval]\nk = -1\n")
    code, out, err = run_cli("--config", str(cfg), "search", "immune system")
    assert code == 2 and err.strip() == f"error: {cfg} [retrieval]: k = -1 is out of range: it must be from 1 to 1,000"
    monkeypatch.setenv("SHVAYAMBHU_MLX_TEMPERATURE", "nan")
    code, out, err = run_cli("status")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "temperature = nan" in err
    monkeypatch.delenv("SHVAYAMBHU_MLX_TEMPERATURE")
    code, out, err = run_cli("search", "-k", "2", "--json", "immune system")
    assert code == 0 and out.count('"id"') == 2


def test_a_utf8_api_key_matches_a_utf8_client(make_assistant):
    key = "clé-ключ-🔑"
    with start_in_thread(make_assistant(), ServeOptions(api_key=key)) as running:
        url = running.url + "/v1/models"
        assert httpx.get(url, headers={"Authorization": b"Bearer " + key.encode("utf-8")}).status_code == 200
        assert httpx.get(url, headers={"Authorization": b"Bearer " + "clé".encode("latin-1")}).status_code == 401
        assert httpx.get(url, headers={"Authorization": b"Bearer " + key.encode("utf-8")[:-1]}).status_code == 401
