"""The one exception type shardtrain raises for bad input or bad configuration."""


class ShardtrainError(Exception):
    """A user-facing error whose message is one line naming the file, row or key at fault.

    The CLI prints it as ``error: <message>`` and exits non-zero without a traceback
    (unless ``--debug`` is given), so the message must stand on its own.
    """
