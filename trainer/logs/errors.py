"""The one exception a log loader raises: it names the file, the column, the row and what was expected."""

from __future__ import annotations

import os


class LogValidationError(ValueError):
    """A log that does not follow the format (docs/log-format.md).

    ``row`` is the 0-based row inside ``file``; ``context`` names the episode, step and agent
    of that row where they are known.
    """

    def __init__(
        self,
        file: str | os.PathLike,
        message: str,
        column: str | None = None,
        row: int | None = None,
        context: str | None = None,
    ):
        self.file, self.column, self.row, self.context = str(file), column, row, context
        where = [self.file]
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        text = ", ".join(where) + (f" ({context})" if context else "") + f": {message}"
        super().__init__(text)
