"""The exceptions that the CLI turns into a clean one-line error or a signal's exit status."""

from __future__ import annotations

import re

_OPTION = re.compile(r"\{([a-z_]+)\}")


def render_options(text: str, spell=None) -> str:
    """``text`` with each option written ``{name}`` spelled as ``spell(name)`` (default: the
    Python parameter name itself)."""
    return _OPTION.sub(lambda m: (spell or (lambda name: name))(m.group(1)), text)


class OnnxPruneError(Exception):
    """A user-facing error: bad input, bad option, or a model we refuse to write.

    The CLI prints ``error: <message>`` and exits with status 2; the Python API raises it.

    A message may name an option as ``{name}``, the Python parameter name (``{ratio}``,
    ``{input_shapes}``). ``str(error)`` spells it as the parameter (``ratio``); the CLI spells
    it as its flag (``--ratio``), see :meth:`render`. Values put into a message by the caller
    are never reinterpreted: only ``{name}`` spellings of lowercase identifiers are options.
    """

    def render(self, spell=None) -> str:
        """The message with each ``{name}`` replaced by ``spell(name)`` (default: ``name``)."""
        return render_options(self.template, spell)

    @property
    def template(self) -> str:
        """The message with its options still written ``{name}``: what to embed in another
        error or note, so that whoever prints it spells them."""
        return super().__str__()

    def __str__(self) -> str:
        return self.render()


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``docker stop``, systemd, a CI timeout). Raised like ``KeyboardInterrupt``
    for SIGINT, so that the same clean-up runs; the CLI exits with 143 (128 + 15)."""
