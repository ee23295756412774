"""The docs cannot drift: every `sasrec ...` and `make ...` command they show exists.

Commands are taken from code blocks and inline code in README.md and docs/*.md. A
`sasrec` command must name a subcommand and only flags it has; a `make` command only
targets the Makefile has, and the flags in its ARGS="..." must be flags of `sasrec run`.
"""

import argparse
import re
import shlex
from pathlib import Path

import pytest

from sasrec.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAKE_TARGETS = set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.M))
COMMAND = re.compile(r"^\s*(?:\$\s*)?((?:sasrec|make)(?:\s.*)?)$")


def shown_commands(path: Path) -> list[str]:
    """Command lines in fenced blocks, and inline code spans that are commands."""
    text = path.read_text()
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.splitlines():
            match = COMMAND.match(line.split("  #")[0].split(" # ")[0])
            if match:
                commands.append(match.group(1).strip())
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [span for span in re.findall(r"`([^`\n]+)`", outside) if COMMAND.match(span)]
    return commands


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    (choices,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return choices.choices


def flags(tokens: list[str]) -> list[str]:
    """The flags among tokens of a usage line (`[--kcore K]`, `--out=DIR`, `-k`)."""
    found = []
    for token in tokens:
        token = token.strip("[]()|.,")
        if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", token):
            found.append(token.split("=")[0])
    return found


def check(command: str) -> list[str]:
    """What is wrong with one shown command (nothing when it is right)."""
    try:
        tokens = shlex.split(command)
    except ValueError:
        tokens = command.split()
    problems = []
    if tokens[0] == "sasrec":
        if len(tokens) == 1:
            return []  # the command's name in prose
        name = tokens[1]
        if name not in subcommands():
            return [f"{command}: no subcommand {name!r}"]
        known = options_of(subcommands()[name]) | {"-v", "--verbose"}
        problems += [
            f"{command}: sasrec {name} has no {flag}"
            for flag in flags(tokens[2:])
            if flag not in known
        ]
        return problems
    run_flags = options_of(subcommands()["run"])
    for token in tokens[1:]:
        if token.startswith("ARGS="):
            problems += [
                f"{command}: sasrec run has no {flag}"
                for flag in flags(token[5:].split())
                if flag not in run_flags and "submit" not in tokens
            ]
        elif re.fullmatch(r"[a-z][a-z-]*", token) and token not in MAKE_TARGETS:
            problems.append(f"{command}: the Makefile has no target {token!r}")
    return problems


def test_the_docs_show_commands_at_all():
    assert len([c for doc in DOCS for c in shown_commands(doc)]) > 20


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_command_in_the_docs_exists(doc):
    problems = [problem for command in shown_commands(doc) for problem in check(command)]
    assert problems == []


def test_the_check_catches_a_wrong_command():
    assert check("sasrec train --sequences DIR --epochs 3") == [
        "sasrec train --sequences DIR --epochs 3: sasrec train has no --epochs"
    ]
    assert check("make deploy") == ["make deploy: the Makefile has no target 'deploy'"]
    assert check('make run ARGS="--kcore 0 --max-len 5"') == [
        'make run ARGS="--kcore 0 --max-len 5": sasrec run has no --max-len'
    ]
