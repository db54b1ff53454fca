"""``salon completion bash|zsh``: a completion script made from the parser itself.

The script holds four tables keyed by the command path (``"salon:room:create"``): the
subcommands, the options, the positional choices (``role``'s roles, ``mod``'s actions) and,
keyed by path and option, an option's choices (``--kind chat channel conference``). A small
shell function walks the words typed so far through the subcommand table and offers what
fits; anything else (names, files) falls back to the shell's file completion. Built from
:func:`client.cli.main.build_parser`, so it can never name a command that does not exist.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator

ROOT = "salon"
SEP = ":"  # between the words of a key: no spaces, so no quoting inside a subscript


def tables(
    parser: argparse.ArgumentParser,
) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    subs: dict[str, str] = {}
    opts: dict[str, str] = {}
    positional: dict[str, str] = {}
    choices: dict[str, str] = {}
    for path, p in _walk(ROOT, parser):
        names: list[str] = []
        values: list[str] = []
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                names += list(action.choices)
            elif action.option_strings:
                opts[path] = " ".join([*opts.get(path, "").split(), *action.option_strings])
                if action.choices:
                    for option in action.option_strings:
                        choices[f"{path}{SEP}{option}"] = " ".join(map(str, action.choices))
            elif action.choices:
                values += [str(c) for c in action.choices]
        if names:
            subs[path] = " ".join(names)
        if values:
            positional[path] = " ".join(values)
    return subs, opts, positional, choices


Walked = Iterator[tuple[str, argparse.ArgumentParser]]


def _walk(path: str, parser: argparse.ArgumentParser) -> Walked:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(f"{path}{SEP}{name}", child)


def _assign(name: str, table: dict[str, str]) -> str:
    # One assignment a key (bash and every zsh read these alike); keys are plain words.
    return "\n".join(f"{name}[{k}]={shlex.quote(v)}" for k, v in sorted(table.items()))


BASH = """\
# salon completion for bash: eval "$(salon completion bash)" (e.g. in ~/.bashrc)
declare -gA _salon_sub _salon_opt _salon_pos _salon_choices
{tables}
_salon() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local at=salon word i
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if [[ " ${{_salon_sub[$at]}} " == *" $word "* ]]; then at="$at:$word"; fi
    done
    if [[ -n "${{_salon_choices[$at:$prev]+set}}" ]]; then
        COMPREPLY=($(compgen -W "${{_salon_choices[$at:$prev]}}" -- "$cur"))
    elif [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "${{_salon_opt[$at]}}" -- "$cur"))
    else
        COMPREPLY=($(compgen -W "${{_salon_sub[$at]}} ${{_salon_pos[$at]}}" -- "$cur"))
    fi
}}
complete -o default -F _salon salon
"""

ZSH = """\
#compdef salon
# salon completion for zsh: salon completion zsh > "${{fpath[1]}}/_salon" (then compinit),
# or: source <(salon completion zsh) after compinit
typeset -gA _salon_sub _salon_opt _salon_pos _salon_choices
{tables}
_salon() {{
    # (not "path": zsh ties that name to $PATH)
    local cur="${{words[CURRENT]}}" prev="${{words[CURRENT-1]}}" at=salon word i
    for ((i = 2; i < CURRENT; i++)); do
        word="${{words[i]}}"
        if [[ " ${{_salon_sub[$at]}} " == *" $word "* ]]; then at="$at:$word"; fi
    done
    if (( ${{+_salon_choices[$at:$prev]}} )); then
        compadd -- ${{=_salon_choices[$at:$prev]}}
    elif [[ "$cur" == -* ]]; then
        compadd -- ${{=_salon_opt[$at]}}
    elif [[ -n "${{_salon_sub[$at]}}${{_salon_pos[$at]}}" ]]; then
        compadd -- ${{=_salon_sub[$at]}} ${{=_salon_pos[$at]}}
    else
        _files
    fi
}}
compdef _salon salon
"""


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    subs, opts, positional, choices = tables(parser)
    assigned = "\n".join(
        _assign(name, table)
        for name, table in (
            ("_salon_sub", subs),
            ("_salon_opt", opts),
            ("_salon_pos", positional),
            ("_salon_choices", choices),
        )
    )
    return (BASH if shell == "bash" else ZSH).format(tables=assigned)
