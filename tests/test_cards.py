"""Every shipped checkpoint can be remade from a clean clone by the commands its model card lists."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from ponder.cli import app
from ponder.lm.base import Request, SamplingParams
from ponder.lm.hf import ASSETS, HFBackend
from ponder.train.recipe import load_recipe_yaml

SHIPPED = sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").is_file())


def parse(command: str) -> None:
    """Parse a `ponder ...` command line with the real CLI, without running it: unknown commands and options
    fail here."""
    args = shlex.split(command)
    assert args[0] == "ponder", command
    cmd, name, rest = get_command(app), "ponder", args[1:]
    while hasattr(cmd, "get_command"):  # a group (typer's own click); none takes options: the next word is a command
        sub = cmd.get_command(cmd.context_class(cmd), rest[0])
        assert sub is not None, f"no command {rest[0]!r} in `{command}`"
        cmd, name, rest = sub, rest[0], rest[1:]
    cmd.make_context(name, rest)


def card_commands(name: str) -> list[str]:
    card = (ASSETS / name / "README.md").read_text()
    assert "## Remake from a clean clone" in card, f"{name}: the card lists no commands that remake it"
    section = card.split("## Remake from a clean clone", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `([^`]+)`", section, flags=re.M)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_checkpoint_card_names_the_commands_that_remade_it(name):
    commands = card_commands(name)
    assert commands, name
    last = shlex.split(commands[-1])
    assert (last[:2] in (["ponder", "train"],) and last[3] == name) or last[3].startswith(name), commands[-1]
    assert last[-2:] == ["--out", f"src/ponder/assets/{name}"]
    made: set[str] = set()
    for command in commands:
        parse(command)
        words = shlex.split(command)
        if "--out" in words:
            made.add(words[words.index("--out") + 1])
    _, recipe = load_recipe_yaml(last[3])
    for command in recipe.get("prepare", []):
        assert command in commands, f"{name}: the card leaves out `{command}`"
    reads = [*str(recipe.get("data", "")).split(","), str(recipe.get("train", {}).get("init", ""))]
    for path in (p.strip() for p in reads if p.strip().startswith("runs/")):
        assert any(path == out or path.startswith(out + "/") for out in made), f"{name}: nothing makes {path}"


def test_a_misspelt_command_fails_to_parse():
    parse("ponder collect oracle --task game24 --limit 400 --out runs/x")
    with pytest.raises(Exception, match="No such option"):
        parse("ponder collect oracle --task game24 --limits 400")


def tiny(command: str, out: Path) -> list[str]:
    """A card's command at a tiny scale: a few problems (`--limit`), two samples, two training steps, the
    checkpoint written to `out` instead of the package."""
    words = shlex.split(command)[1:]
    if "--limit" in words:
        words[words.index("--limit") + 1] = "4"
    elif words[0] == "collect":
        words += ["--limit", "2"]
    if words[:2] == ["collect", "oracle"]:
        words += ["--samples", "2"]
    if words[0] == "train":
        words += ["--steps", "2"]
        if words[words.index("--out") + 1].startswith("src/ponder/assets/"):
            words[words.index("--out") + 1] = str(out)
    return words


ARCHITECTURE = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings")


@pytest.mark.slow
def test_a_cards_commands_remake_its_checkpoint_at_a_tiny_scale(tmp_path: Path) -> None:
    """arith-policy's card, run as written but for two training steps, in a clean folder: the checkpoint loads and
    generates, with the shipped one's architecture and head."""
    name, out = "arith-policy", tmp_path / "remade"
    for command in card_commands(name):
        cli = [sys.executable, "-c", "from ponder.cli import app; app()", *tiny(command, out)]
        run = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=1200)
        assert run.returncode == 0, f"{command}\n{run.stderr[-3000:]}"
    shipped, remade = (json.loads((d / "config.json").read_text()) for d in (ASSETS / name, out))
    assert {k: remade.get(k) for k in ARCHITECTURE} == {k: shipped.get(k) for k in ARCHITECTURE}
    assert remade.get("ponder_verifier") == shipped.get("ponder_verifier")  # the head: none, a policy
    [completion] = HFBackend(str(out)).generate_batch([Request("Ann has 3 pens.", SamplingParams(max_tokens=8))])
    assert completion.generated_tokens > 0
