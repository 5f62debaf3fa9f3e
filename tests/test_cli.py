import json

import pytest
from typer.testing import CliRunner

from workbench.cli import app

runner = CliRunner()


def test_corpus_json_has_the_documented_keys():
    result = runner.invoke(app, ["corpus", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert {"languages", "udhr_languages", "prompts"} <= payload.keys()
    first = payload["languages"][0]
    assert {"code", "name", "script", "parallel", "monolingual_tokens"} <= first.keys()
    assert payload["udhr_languages"] >= 300 and payload["prompts"] >= 200


def test_corpus_table_lists_every_language():
    result = runner.invoke(app, ["corpus"])
    assert result.exit_code == 0 and "Hindi" in result.output and "UDHR" in result.output


@pytest.mark.model
def test_info_json_describes_the_embedded_model():
    result = runner.invoke(app, ["info", "--json", "--backend", "hf"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    model = payload["model"]
    assert (model["n_layers"], model["d_model"], model["d_mlp"], model["d_vocab"]) == (18, 640, 2048, 262144)
    assert model["backend"] == "hf" and model["cache_path"]
    assert payload["corpus"]["languages"] >= 24


def test_unknown_model_is_a_clear_error():
    result = runner.invoke(app, ["info", "--model", "gemma-3-270mm"])
    assert result.exit_code != 0
    assert "unknown model" in str(result.exception)


def test_a_mistyped_command_is_one_line_not_a_traceback(monkeypatch, capsys):
    from workbench.cli import main

    monkeypatch.setattr("sys.argv", ["workbench", "stor"])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "No such command 'stor'" in err and "Traceback" not in err
