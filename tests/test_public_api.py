"""`import workbench as wb` is light and every advertised name resolves to the real object."""

import importlib
import subprocess
import sys

import workbench as wb


def test_every_public_name_resolves():
    for name in wb.__all__:
        assert getattr(wb, name) is not None, name
    assert wb.load_model is importlib.import_module("workbench.models").load_model
    assert wb.evaluate is importlib.import_module("workbench.evaluation.evaluate").evaluate
    assert wb.steering is importlib.import_module("workbench.interventions").steering
    assert callable(wb.corpus.parallel)
    assert "diffmean" in wb.method_names()


def test_unknown_name_is_an_attribute_error():
    try:
        wb.not_a_thing  # noqa: B018
    except AttributeError as err:
        assert "not_a_thing" in str(err)
    else:
        raise AssertionError("an unknown name resolved")


def test_import_is_light():
    """Importing the package pulls in neither torch nor TransformerLens; they come with the first name used."""
    code = "import sys, workbench; print('torch' in sys.modules, 'transformer_lens' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_methods_declared_as_entry_points_are_registered():
    assert {"lape", "clas"} <= set(wb.method_names())
    assert wb.get_method("clas").name == "clas"
