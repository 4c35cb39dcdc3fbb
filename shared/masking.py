"""Masking secret values in text that leaves a step: ``***`` for each.

``secret_forms(values)`` is what is looked for: each value, and each line of a
multi-line value (a PEM key is printed line by line as often as whole), those of at
least ``MIN_SECRET`` characters (shorter ones would mask ordinary words; ``cyclone
secret set`` refuses them). No form holds a newline.

``Masker`` masks a stream of text fed in chunks cut anywhere: its output, joined,
equals ``mask(whole text)`` whatever the cuts. It holds back only the end of what it
was fed that could still begin a form (at most the longest form's length less one
character, and never past a newline, which no form holds): text fed up to a newline
comes out at once, so a masked line is not delayed. ``mask`` is the same on one
string.

What is matched is the value as written: an encoding of it (base64, URL-quoted,
hex) or a value the step computes from it is not masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "MIN_SECRET", "Masker", "mask", "secret_forms"]

MASK = "***"
MIN_SECRET = 4


def secret_forms(values: Iterable[str]) -> tuple[str, ...]:
    """The strings to mask for ``values``: longest first, so a form containing another
    is masked whole."""
    forms: set[str] = set()
    for value in values:
        lines = value.splitlines()
        forms.update(line for line in lines if len(line) >= MIN_SECRET)
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


class Masker:
    """A streaming masker (see the module docstring). ``feed`` returns what is safe to
    pass on; ``flush`` what was held back, at the end of the stream."""

    def __init__(self, values: Iterable[str]) -> None:
        self.forms = secret_forms(values)
        self._pattern = re.compile("|".join(map(re.escape, self.forms))) if self.forms else None
        self._longest = len(self.forms[0]) if self.forms else 0
        self._pending = ""

    def feed(self, text: str) -> str:
        if self._pattern is None:
            return text
        buffer = self._pending + text
        held = self._held_from(buffer)
        out: list[str] = []
        at = 0
        for match in self._pattern.finditer(buffer):
            # A match starting before ``held`` is final: no longer form can match there
            # with more text (else that start would be held).
            if match.start() >= held:
                break
            out += (buffer[at:match.start()], MASK)
            at = match.end()
        cut = max(at, held)
        out.append(buffer[at:cut])
        self._pending = buffer[cut:]
        return "".join(out)

    def flush(self) -> str:
        if self._pattern is None:
            return ""
        rest, self._pending = self._pending, ""
        return self._pattern.sub(MASK, rest)

    def _held_from(self, buffer: str) -> int:
        """The first index whose rest of ``buffer`` is a proper prefix of a form (it may
        yet become one), or ``len(buffer)``. Only the last ``longest - 1`` characters
        after the last newline can be."""
        start = max(buffer.rfind("\n") + 1, len(buffer) - self._longest + 1, 0)
        for at in range(start, len(buffer)):
            tail = buffer[at:]
            if any(len(form) > len(tail) and form.startswith(tail) for form in self.forms):
                return at
        return len(buffer)


def mask(text: str, values: Iterable[str]) -> str:
    """``text`` with every form of ``values`` replaced by ``***``."""
    masker = Masker(values)
    return masker.feed(text) + masker.flush()
