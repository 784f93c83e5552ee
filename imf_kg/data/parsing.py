"""Line-level parsing shared by every folder format: UTF-8 text, fields, count lines and id files.

Each reader either returns clean rows or raises :class:`~imf_kg.errors.DataFormatError` naming the file,
the 1-based line number, what was found and what was expected. Blank (whitespace-only) lines are skipped
everywhere; line numbers always count them, so an editor jumps to the right line.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from imf_kg.errors import DataFormatError

# Characters a file of integer ids may contain; anything else is located line by line for the error.
_ID_FILE_CHARS = re.compile(r"[0-9 \t\r\n]*")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def read_text(path: str | Path, what: str = "text") -> str:
    """The content of a UTF-8 file (a leading byte-order mark removed).

    Raises:
        DataFormatError: missing file, or bytes that are not UTF-8 (naming the line and column).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "no such file", f"a {what} file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataFormatError(
            path, line, f"byte 0x{data[err.start]:02x} at column {column}, which is not UTF-8", "UTF-8 text"
        ) from None
    # a byte-order mark written by some editors is not part of the first name
    return text[1:] if text.startswith("\ufeff") else text


def read_lines(path: str | Path, what: str = "text") -> list[str]:
    """All lines of a UTF-8 file, with ``\\r`` and surrounding whitespace removed (index ``i`` = line ``i+1``).

    Raises:
        DataFormatError: as :func:`read_text`, or a file with no non-blank line (``what`` says what it
            should have held).
    """
    text = read_text(path, what)
    # split on "\n" only: str.splitlines would also break at \x0b, \x1c, \u2028 ... and shift line numbers
    lines = [line.strip() for line in text.split("\n")]
    if not any(lines):
        raise DataFormatError(path, 1, "an empty file", f"at least one line of {what}")
    return lines


def numbered(lines: list[str]) -> tuple[list[int], list[str]]:
    """The non-blank lines and their 1-based line numbers."""
    numbers = [i + 1 for i, line in enumerate(lines) if line]
    return numbers, [lines[n - 1] for n in numbers]


def split_count_line(path: Path, lines: list[str], required: bool) -> tuple[int | None, int]:
    """Read an OpenKE count line (the first non-blank line holding a single integer).

    Returns ``(count or None, index of the first data line)``. With ``required`` a missing count line is an
    error; otherwise a first line with more than one field is taken as data.
    """
    first = next(i for i, line in enumerate(lines) if line)
    tokens = lines[first].split()
    if len(tokens) == 1:
        if not tokens[0].isascii() or not tokens[0].isdigit():
            raise DataFormatError(path, first + 1, repr(lines[first]), "a count line holding the number of rows")
        return int(tokens[0]), first + 1
    if required:
        raise DataFormatError(
            path, first + 1, f"{len(tokens)} fields {lines[first]!r}", "a count line (one integer: the number of rows)"
        )
    return None, first


def check_count(path: Path, count: int | None, count_line: int, rows: int) -> None:
    if count is not None and count != rows:
        raise DataFormatError(path, count_line, f"count {count} but {rows} rows follow", f"count line equal to {rows}")


def split_tab_fields(path: Path, lines: list[str], numbers: list[int], columns: int, layout: str) -> list[list[str]]:
    """Split tab-separated lines into exactly ``columns`` non-empty fields (names may contain spaces).

    A line that holds no tab but splits on spaces is reported as mixed separators.
    """
    rows = [line.split("\t") for line in lines]
    for row, number, line in zip(rows, numbers, lines):
        if len(row) != columns:
            _raise_field_error(path, number, line, row, columns, layout, separator="tab")
    for row in rows:  # names keep inner spaces but not the padding around a tab
        for k in range(columns):
            row[k] = row[k].strip()
    for row, number, line in zip(rows, numbers, lines):
        if not all(row):
            _raise_field_error(path, number, line, row, columns, layout, separator="tab")
    return rows


def split_space_fields(
    path: Path, lines: list[str], numbers: list[int], columns: int, layout: str, optional_dot: bool = False
) -> list[list[str]]:
    """Split whitespace-separated lines into exactly ``columns`` fields (``optional_dot``: a trailing ``.``
    as in N-Triples is dropped). Every line of a file must use the same separator, tab or space."""
    uses_tab = ["\t" in line for line in lines]
    if any(uses_tab) and not all(uses_tab):
        # the first line fixes the separator; report the first line that uses the other one
        bad = next(k for k, tab in enumerate(uses_tab) if tab != uses_tab[0])
        first_sep, other = ("tab", "space") if uses_tab[0] else ("space", "tab")
        raise DataFormatError(
            path, numbers[bad], f"{other}-separated fields {lines[bad]!r} (mixed separators)",
            f"{first_sep}-separated fields like line {numbers[0]}: {layout}",
        )
    rows = [line.split() for line in lines]
    for row, number, line in zip(rows, numbers, lines):
        if len(row) != columns:
            if optional_dot and len(row) == columns + 1 and row[-1] == ".":
                row.pop()
                continue
            _raise_field_error(path, number, line, row, columns, layout, separator="whitespace")
    return rows


def _raise_field_error(path, number, line, row, columns, layout, separator):
    if separator == "tab" and len(row) == 1 and len(line.split()) == columns:
        raise DataFormatError(
            path, number, f"space-separated fields {line!r} (mixed separators)", f"tab-separated fields: {layout}"
        )
    if len(row) == columns:
        raise DataFormatError(path, number, f"an empty field in {line!r}", f"{columns} non-empty fields: {layout}")
    raise DataFormatError(path, number, f"{len(row)} {separator}-separated fields {line!r}", f"{columns} fields: {layout}")


def parse_id_rows(path: Path, lines: list[str], numbers: list[int], columns: int, layout: str) -> np.ndarray:
    """``(n, columns)`` int64 array of whitespace-separated integer rows (non-integers name their line)."""
    rows = split_space_fields(path, lines, numbers, columns, layout)
    if all(_ID_FILE_CHARS.fullmatch(line) for line in lines):
        return np.array(rows, dtype=np.int64).reshape(-1, columns)
    for row, number in zip(rows, numbers):
        for token in row:
            if not _INTEGER.fullmatch(token):
                raise DataFormatError(path, number, f"non-integer id {token!r}", f"integer ids: {layout}")
    # only signed integers remain: the range check reports negatives with their line
    return np.array([[int(t) for t in row] for row in rows], dtype=np.int64).reshape(-1, columns)


def check_id_range(path: Path, ids: np.ndarray, numbers: list[int], column: int, size: int, what: str) -> None:
    """Every ``ids[:, column]`` must lie in ``[0, size)``; the first violation names its line."""
    bad = np.flatnonzero((ids[:, column] < 0) | (ids[:, column] >= size))
    if len(bad):
        k = int(bad[0])
        raise DataFormatError(
            path, numbers[k], f"{what} id {int(ids[k, column])} out of range", f"{what} ids in 0..{size - 1}"
        )


def read_id_file(path: str | Path, what: str) -> list[str]:
    """An ``entity2id.txt`` / ``relation2id.txt``: ``name<space or tab>id`` per line, optional count line.

    Returns the names in id order. Ids must be exactly ``0..n-1``, each once; names must be unique.
    The name is everything before the last whitespace run, so names with spaces survive.
    """
    path = Path(path)
    lines = read_lines(path, f"{what} ids")
    count, start = split_count_line(path, lines, required=False)
    names: list[str | None] = []
    id_line: dict[int, int] = {}
    name_line: dict[str, int] = {}
    pairs = []
    for index in range(start, len(lines)):
        line = lines[index]
        if not line:
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            raise DataFormatError(path, index + 1, f"1 field {line!r}", f"'<{what} name> <id>'")
        name, token = parts
        if not _INTEGER.fullmatch(token):
            raise DataFormatError(path, index + 1, f"non-integer id {token!r}", f"'<{what} name> <integer id>'")
        pairs.append((index + 1, name, int(token)))
    check_count(path, count, start, len(pairs))
    size = len(pairs)
    names = [None] * size
    for number, name, ident in pairs:
        if not 0 <= ident < size:
            raise DataFormatError(path, number, f"id {ident} out of range", f"ids 0..{size - 1}, one per line")
        if ident in id_line:
            raise DataFormatError(path, number, f"id {ident} again (first on line {id_line[ident]})", "each id once")
        if name in name_line:
            raise DataFormatError(path, number, f"{what} {name!r} again (first on line {name_line[name]})", "each name once")
        id_line[ident] = number
        name_line[name] = number
        names[ident] = name
    return names  # type: ignore[return-value]  # every slot is filled: size distinct ids in 0..size-1
