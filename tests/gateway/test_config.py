"""The gateway's configuration: flags over a TOML file over defaults, every key checked at start-up
(a bad one exits 2 naming it), and the non-loopback rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from engine.cli import EXIT_USAGE, main
from engine.gateway import ConfigError, create_app, load_config
from engine.gateway.config import config_from_environment


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rxllm.toml"
    path.write_text(text)
    return str(path)


def test_file_keys_are_the_long_flag_names_and_flags_override_them(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'backend = "openai"\nmodel = "llama"\nbase_url = "http://127.0.0.1:9/v1"\nforbid = ["cat"]\n'
        "max_words = 40\nretries = 2\nrequest_timeout = 30\nmax_streams = 10\nvalidation_timeout = 1.5\n",
    )
    config = load_config({"max_words": 10, "forbid": ["dog"]}, file=path, environ={})
    assert (config.backend, config.model, config.max_words, config.forbid) == (
        "openai",
        "llama",
        10,
        ("dog",),
    )
    assert (config.retries, config.request_timeout, config.max_streams) == (2, 30.0, 10)
    assert config.validation_timeout == 1.5
    assert [type(r).__name__ for r in config.requirement_factory()()] == ["MaxWords", "ForbiddenWords"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('max_word = 3\nbackend = "scripted"\n', "max_word"),
        ('max_words = "many"\nbackend = "scripted"\n', "max_words"),
        ('backend = "vllm"\n', "backend"),
        ('backend = "scripted"\nregex = ["("]\n', "regex"),
        ('backend = "scripted"\nchunking = "token"\n', "chunking"),
        ('backend = "scripted"\nmax_streams = 0\n', "max_streams"),
        ('backend = "scripted"\nallow_unauthenticated = "yes"\n', "allow_unauthenticated"),
        ('backend = "scripted"\napi_key = "k"\n', "api_key"),
        ('backend = "openai"\n', "model"),
        ('backend = "scripted"\nhost = "0.0.0.0"\n', "host"),
        ('backend = "scripted"\nrequirements = "no_such_module:make"\n', "requirements"),
        ('backend = "scripted"\nscript = "/no/such/file"\n', "script"),
        ("backend = [\n", "config"),
    ],
)
def test_a_bad_file_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(file=path, environ={})
    assert caught.value.key == key
    assert main(["serve", "--config", path]) == EXIT_USAGE
    assert f"bad configuration: {key}: " in capsys.readouterr().err


def test_a_bad_flag_value_exits_2_with_serves_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--max-streams", "0"])
    assert caught.value.code == EXIT_USAGE
    assert "rxllm serve" in capsys.readouterr().err


def test_a_non_loopback_host_needs_a_client_key_or_an_explicit_opt_out() -> None:
    with pytest.raises(ConfigError, match=r"not a loopback address.*client key"):
        load_config({"backend": "scripted", "host": "0.0.0.0"}, environ={})
    assert (
        load_config({"backend": "scripted", "host": "0.0.0.0", "client_key": "k"}, environ={}).client_key
        == "k"
    )
    keyed = load_config({"backend": "scripted", "host": "0.0.0.0"}, environ={"RXLLM_SERVE_CLIENT_KEY": "env"})
    assert keyed.client_key == "env"
    opened = load_config(
        {"backend": "scripted", "host": "0.0.0.0", "allow_unauthenticated": True}, environ={}
    )
    assert opened.client_key is None
    assert load_config({"backend": "scripted", "host": "::1"}, environ={}).loopback


def test_keys_never_show_in_the_configs_repr() -> None:
    config = load_config(
        {"backend": "openai", "model": "m", "api_key": "sk-upstream", "client_key": "gw-secret"}, environ={}
    )
    assert "sk-upstream" not in repr(config) and "gw-secret" not in repr(config)


def test_under_gunicorn_the_config_comes_from_the_environment_and_needs_a_key(tmp_path: Path) -> None:
    path = write(tmp_path, 'backend = "scripted"\nforbid = ["x"]\n')
    with pytest.raises(ConfigError) as caught:
        config_from_environment({"RXLLM_SERVE_CONFIG": path})
    assert caught.value.key == "client_key"
    config = config_from_environment({"RXLLM_SERVE_CONFIG": path, "RXLLM_SERVE_CLIENT_KEY": "k"})
    assert (config.forbid, config.client_key) == (("x",), "k")
    opened = write(tmp_path, 'backend = "scripted"\nallow_unauthenticated = true\n')
    assert config_from_environment({"RXLLM_SERVE_CONFIG": opened}).client_key is None


def test_create_app_without_a_config_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RXLLM_SERVE_CONFIG", write(tmp_path, 'backend = "scripted"\nmax_streams = 3\n'))
    monkeypatch.setenv("RXLLM_SERVE_CLIENT_KEY", "k")
    app = create_app()
    from engine.gateway import GATEWAY

    assert app[GATEWAY].config.max_streams == 3


def test_a_requirements_factory_is_found_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "house_rules_for_gateway_test.py").write_text(
        "from engine import ForbiddenWords\n\ndef make():\n    return [ForbiddenWords(['secret'])]\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    config = load_config(
        {"backend": "scripted", "requirements": "house_rules_for_gateway_test:make"}, environ={}
    )
    assert [type(r).__name__ for r in config.requirement_factory()()] == ["ForbiddenWords"]
