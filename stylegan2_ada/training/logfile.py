"""``log.txt``: everything the process prints (stdout and stderr) also goes to a file, appended."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO


class _TeeStream:
    def __init__(self, stream: TextIO, file: TextIO) -> None:
        self._stream, self._file = stream, file

    def write(self, text: str) -> int:
        self._stream.write(text)
        if not self._file.closed:
            self._file.write(text)
            self._file.flush()
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
        if not self._file.closed:
            self._file.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class LogTee:
    """Context manager: tee ``sys.stdout`` and ``sys.stderr`` into ``path`` (append mode) until exit."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: TextIO | None = None
        self._saved: tuple[TextIO, TextIO] | None = None

    def __enter__(self) -> LogTee:
        self._file = open(self.path, "a", encoding="utf-8")
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _TeeStream(sys.stdout, self._file)  # type: ignore[assignment]
        sys.stderr = _TeeStream(sys.stderr, self._file)  # type: ignore[assignment]
        return self

    def write_file_only(self, text: str) -> None:
        """Append ``text`` to the log file alone (e.g. the reason a run ended, which the caller prints)."""
        if self._file is not None:
            self._file.write(text)
            self._file.flush()

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if self._file is not None:
            self._file.close()
            self._file = None
