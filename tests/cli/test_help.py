"""Every option of every ``climbq`` command explains itself: help text, the values it takes
and what happens when it is left out."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from climbq_deploy.cli import build_parser, train
from climbq_deploy.cli._args import HelpFormatter


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("climbq",)
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``("climbq data syndigits", parser)`` for the top level and every sub-command."""
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


ALL = [(name, action) for name, parser in commands(build_parser()) for action in options(parser)]
IDS = [f"{name} {'/'.join(action.option_strings) or action.dest}" for name, action in ALL]


def test_the_walk_finds_every_command() -> None:
    names = {name for name, _ in commands(build_parser())}
    expected = {"train", "calibrate", "adjust-logits", "export", "check", "bench", "report"}
    assert {f"climbq {n}" for n in expected} | {"climbq data syndigits", "climbq demo"} <= names
    assert len(ALL) > 100


@pytest.mark.parametrize(("command", "action"), ALL, ids=IDS)
def test_every_option_has_help_and_says_its_default(command: str, action: argparse.Action) -> None:
    assert action.help and action.help.strip(), f"{command}: {action.option_strings} has no help"
    shown = HelpFormatter("climbq")._get_help_string(action) or ""
    takes_value = action.nargs != 0
    if action.option_strings and takes_value and not action.required:
        # a value left out has a meaning: the default, shown by the formatter or in the text
        assert "default" in shown, f"{command} {action.option_strings}: {shown!r}"


def test_every_command_renders_its_help() -> None:
    for name, parser in commands(build_parser()):
        text = parser.format_help()  # a stray % in a help text fails here
        for action in options(parser):
            assert (action.option_strings or [action.metavar or action.dest])[0] in text, name


def test_target_lists_every_registered_target_tensorrt_included() -> None:
    from climbq_deploy.targets import TARGETS

    found = dict(commands(build_parser()))
    for name in ("climbq export", "climbq check"):
        (target,) = [a for a in options(found[name]) if "--target" in a.option_strings]
        assert "tensorrt" in TARGETS
        for registered in TARGETS:
            assert f"{registered}:" in target.help and registered in (target.metavar or "")


def test_the_listed_values_are_the_librarys() -> None:
    """``climbq train`` lists its values without importing torch; they must stay the
    library's."""
    from climbq_deploy.losses import LOSS_NAMES
    from climbq_deploy.models import ARCHS
    from climbq_deploy.quant.functional import SUPPORTED_BITS
    from climbq_deploy.quant.quantizers import METHODS

    assert train.ARCH_NAMES == ARCHS
    assert tuple(m for m in METHODS if m != "ptq") == train.TRAIN_METHODS  # ptq: calibrate
    assert train.LOSS_NAMES == LOSS_NAMES
    assert train.BITS == SUPPORTED_BITS


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "d", "--out", "o", "--wbits", "9"], "invalid choice: 9"),
        (["check", "r", "--target", "tpu"], "unknown target 'tpu'; expected one of numpy"),
    ],
)
def test_values_outside_the_choices_are_refused_by_argparse(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2 and message in capsys.readouterr().err
