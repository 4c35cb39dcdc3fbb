"""Step outputs: what a step writes to ``$CYCLONE_OUTPUT``, as GitHub's ``$GITHUB_OUTPUT``.

One output per line, ``KEY=value``; a multi-line value between a delimiter of the
step's choice::

    echo "version=1.4.2" >> "$CYCLONE_OUTPUT"
    {
      echo "notes<<EOF"
      cat CHANGES.md
      echo "EOF"
    } >> "$CYCLONE_OUTPUT"

A key is a shell variable name (it becomes one: later steps of the job, and the jobs
that need it, get each output as an env variable). A later line for the same key
wins. What cannot be read (a line without ``=``, a bad key, a delimiter never closed)
is skipped with a problem saying which line; outputs never fail a step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.masking import mask

__all__ = ["MAX_OUTPUTS", "ParsedOutputs", "masked", "parse_outputs"]

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_OUTPUTS = 100  # per step
MAX_VALUE = 64 * 1024  # characters of one value; events must stay small


@dataclass(frozen=True)
class ParsedOutputs:
    values: dict[str, str]
    problems: tuple[str, ...] = ()


def parse_outputs(raw: bytes) -> ParsedOutputs:
    """The outputs in the bytes a step wrote (UTF-8; bad bytes replaced)."""
    lines = raw.decode("utf-8", "replace").splitlines()
    values: dict[str, str] = {}
    problems: list[str] = []
    at = 0
    while at < len(lines):
        line, number = lines[at], at + 1
        at += 1
        if not line.strip():
            continue
        key, value, at, problem = _entry(line, number, lines, at)
        if problem:
            problems.append(problem)
        elif key not in values and len(values) >= MAX_OUTPUTS:
            problems.append(f"line {number}: more than {MAX_OUTPUTS} outputs; {key} ignored")
        elif len(value) > MAX_VALUE:
            problems.append(f"line {number}: {key} is longer than {MAX_VALUE} characters; "
                            "ignored (use an artifact for big values)")
        else:
            values[key] = value
    return ParsedOutputs(values, tuple(problems))


def _entry(line: str, number: int, lines: list[str], at: int,
           ) -> tuple[str, str, int, str]:
    """(key, value, next line index, problem) of the entry starting at ``line``."""
    heredoc = line.find("<<")
    equals = line.find("=")
    if heredoc > 0 and (equals < 0 or heredoc < equals):
        key, delimiter = line[:heredoc], line[heredoc + 2:]
        if not delimiter:
            return key, "", at, f"line {number}: {key}<< needs a delimiter"
        try:
            end = lines.index(delimiter, at)
        except ValueError:
            return key, "", len(lines), (f"line {number}: delimiter {delimiter!r} of {key} "
                                         "never closed")
        value = "\n".join(lines[at:end])
        at = end + 1
    elif equals > 0:
        key, value = line[:equals], line[equals + 1:]
    else:
        return "", "", at, f"line {number}: expected KEY=value or KEY<<DELIMITER"
    if not KEY.fullmatch(key):
        return key, "", at, (f"line {number}: {key!r} is not a valid output name (letters, "
                             "digits and '_', not starting with a digit)")
    return key, value, at, ""


def masked(values: dict[str, str], secrets: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """``values`` with every secret masked, and the keys whose value held one."""
    forms = tuple(secrets)
    out: dict[str, str] = {}
    hit: list[str] = []
    for key, value in values.items():
        out[key] = mask(value, forms) if forms else value
        if out[key] != value:
            hit.append(key)
    return out, hit
