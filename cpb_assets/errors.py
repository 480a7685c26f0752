"""Errors that name the file and the field at fault."""
from __future__ import annotations

from pathlib import Path


class SourceFormatError(ValueError):
    """A source file is malformed.

    Parameters
    ----------
    file
        The offending file.
    field
        The column, dataset path, sheet or attribute at fault.
    problem
        What is wrong, in words.
    """

    def __init__(self, file: str | Path, field: str, problem: str):
        self.file = str(file)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.file}: field '{field}': {problem}")
