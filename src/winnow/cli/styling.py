"""How ``--help`` shows parameters: the classic Typer/Click look (``NAME`` in the usage line, value
types as TEXT, INTEGER, FILE..., nothing after a flag) instead of this Typer's ``{name}``,
``<str>`` and ``<bool>``. Every app of the CLI is made by ``typer_app``, whose groups restyle the
parameters of each command they hand out, so no command has to remember to."""

from __future__ import annotations

from typing import Any

import typer
from typer._click import Context  # the Click that this Typer vendors
from typer.core import TyperArgument, TyperGroup, TyperOption

_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "file": "FILE", "path": "PATH"}


def _type_name(label: str) -> str:
    """``<int>`` -> INTEGER, ``<list[str]>`` -> TEXT, ``<local|ray>`` -> [local|ray]."""
    label = label.strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    if "|" in label:
        return f"[{label}]"
    return _TYPE_NAMES.get(label, label.upper())


class _Argument(TyperArgument):
    """A positional argument shown as ``NAME`` (``[NAME]`` when optional), with its value type."""

    def get_usage_pieces(self, ctx: Context) -> list[str]:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return [name + ("..." if self.nargs != 1 else "")]

    def display_type_rich(self, ctx: Context) -> str | None:
        shown = super().display_type_rich(ctx)
        return None if shown is None else _type_name(shown)


def restyle(param: Any, ctx: Context) -> None:
    """Give ``param`` the classic look (once; a metavar set by hand is kept)."""
    if isinstance(param, TyperArgument) and not isinstance(param, _Argument):
        param.__class__ = _Argument
        param.metavar = param.metavar or (param.name or "arg").upper()
    elif isinstance(param, TyperOption) and param.metavar is None:
        param.metavar = "" if param.is_flag else _type_name(param.display_type(ctx))


class StyledGroup(TyperGroup):
    """A command group whose own parameters, and those of the commands it resolves (for running them
    or listing them in its help), are restyled."""

    def get_params(self, ctx: Context) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            restyle(param, ctx)
        return params

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            for param in command.get_params(ctx):
                restyle(param, ctx)
        return command


def typer_app(help: str, **options: Any) -> typer.Typer:
    """A Typer app (or sub-app) of the CLI: restyled help, and its help when run without a command."""
    return typer.Typer(cls=StyledGroup, help=help, no_args_is_help=True, **options)
