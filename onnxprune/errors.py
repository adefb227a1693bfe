"""The one exception type that the CLI turns into a clean one-line error."""


class OnnxPruneError(Exception):
    """A user-facing error: bad input, bad option, or a model we refuse to write.

    The CLI prints ``error: <message>`` and exits with status 2; the Python API raises it.
    """
