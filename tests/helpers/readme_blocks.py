"""The fenced code blocks of a Markdown file, in order, with the README test's skip markers.

A block the README test must not run carries an HTML comment on the line just before its
fence, which a reader of the rendered README never sees::

    <!-- readme-test: skip (needs a GPU) -->
    ```bash
    raybench plan --config jobs/paper-scenario2.yaml --num-gpus 8
    ```

The reason in parentheses is required: it says what the block needs that a test run lacks.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Optional

#: The languages the README test runs (or finds marked as not run).
RUN_LANGS = ("bash", "sh", "python")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<ticks>`{3,})(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")
_SKIP = re.compile(r"^skip\s*\((?P<reason>[^()]*\S[^()]*)\)$")


class MarkerError(ValueError):
    """A ``readme-test`` marker that is malformed or stands before no fence."""


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, the line of its opening fence (1-based), its text
    (dedented by the fence's indent) and the skip reason of its marker (None: run it)."""

    lang: str
    line: int
    text: str
    skip: Optional[str] = None


@dataclass(frozen=True)
class Command:
    """One shell command of a block: its words, its trailing comment and its first line."""

    argv: tuple[str, ...]
    comment: str
    line: int


def blocks(markdown: str) -> list[Block]:
    """Every fenced block of ``markdown`` in order (any language; ``lang`` may be empty).

    Raises:
        MarkerError: A marker that is not ``skip (REASON)`` or is not directly followed by a
            fence, naming its line.
    """
    lines = markdown.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        marker = _MARKER.match(lines[i])
        fence = _FENCE.match(lines[i])
        if marker:
            reason = _skip_reason(marker.group("body"), i + 1)
            if i + 1 >= len(lines) or not _FENCE.match(lines[i + 1]):
                raise MarkerError(f"README line {i + 1}: a readme-test marker must stand on the "
                                  "line just before a code fence")
            block, i = _read_block(lines, i + 1, reason)
            out.append(block)
        elif fence:
            block, i = _read_block(lines, i, None)
            out.append(block)
        else:
            i += 1
    return out


def _skip_reason(body: str, line: int) -> str:
    found = _SKIP.match(body)
    if not found:
        raise MarkerError(f"README line {line}: readme-test marker {body!r}; the form is "
                          "'readme-test: skip (WHAT IT NEEDS)'")
    return found.group("reason").strip()


def _read_block(lines: list[str], start: int, skip: Optional[str]) -> tuple[Block, int]:
    """The block whose opening fence is ``lines[start]``; returns it and the next line index."""
    opening = _FENCE.match(lines[start])
    assert opening is not None
    indent, ticks = opening.group("indent"), opening.group("ticks")
    body = []
    for j in range(start + 1, len(lines)):
        if lines[j].strip() == ticks:
            text = "\n".join(x[len(indent):] if x.startswith(indent) else x.lstrip() for x in body)
            return Block(opening.group("lang"), start + 1, text + "\n", skip), j + 1
        body.append(lines[j])
    raise MarkerError(f"README line {start + 1}: code fence never closed")


def shell_commands(block: Block) -> list[Command]:
    """The commands of a shell block: ``\\``-continued lines joined, ``# comments`` split off
    (shell quoting respected), blank lines skipped."""
    out: list[Command] = []
    pending, first = "", 0
    for number, raw in enumerate(block.text.splitlines(), block.line + 1):
        if not pending:
            first = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        words, comment = _split_comment(pending + raw)
        pending = ""
        if words:
            out.append(Command(tuple(words), comment, first))
    return out


def _split_comment(text: str) -> tuple[list[str], str]:
    hash_at = _comment_start(text)
    if hash_at < 0:
        return shlex.split(text), ""
    return shlex.split(text[:hash_at]), text[hash_at + 1:].strip()


def _comment_start(text: str) -> int:
    """Index of the ``#`` that starts a shell comment (outside quotes, after a blank)."""
    quote = ""
    for k, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or text[k - 1].isspace()):
            return k
    return -1
