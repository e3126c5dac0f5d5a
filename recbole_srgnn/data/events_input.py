"""Reading a Retail Rocket ``events.csv``: the needed columns as numpy arrays, validated.

The converter's protocol (``retailrocket.py``) trusts the arrays returned here; every check of the
untrusted file lives in this module, and every problem is one ``InputError`` line that names the
line number where there is one and quotes at most a short, escaped excerpt of the file (no raw
bytes reach the terminal).

What is read (docs/design.md §2):

- UTF-8 CSV text with a header (a byte-order mark is skipped); compressed files (gzip, bzip2,
  zstd) are recognised by their first bytes, whatever their name (``events.csv.gz``, or a gzip
  file named ``events.csv``), and read decompressed. Other binary content (zip, xz, parquet,
  UTF-16 text, ...) is refused with one line.
- ``timestamp`` (milliseconds since 1970-01-01 UTC), ``visitorid`` and ``itemid``: integers
  (``123.0`` is accepted). Negative values are accepted: ids are kept as given (they are tokens
  to RecBole) and timestamps before 1970 are ordinary moments. A timestamp must name a moment
  of years 1 to 9999 (``TIMESTAMP_RANGE_MS``): a larger one (e.g. microseconds or nanoseconds
  instead of milliseconds) is refused naming its line.
- ``event``: ``view``, ``addtocart`` or ``transaction``.

Line numbers count the header as line 1 and assume one line per row (no quoted line breaks, no
blank lines), as in the Kaggle file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recbole_srgnn.errors import InputError, excerpt

EVENT_TYPES = ("view", "addtocart", "transaction")
REQUIRED_COLUMNS = ("timestamp", "visitorid", "event", "itemid")
DEFAULT_EVENTS_PATH = Path("dataset/raw/retailrocket/events.csv")
KAGGLE_URL = "https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset"
#: Milliseconds since 1970-01-01 UTC of 0001-01-01T00:00:00.000 and 9999-12-31T23:59:59.999.
TIMESTAMP_RANGE_MS = (-62_135_596_800_000, 253_402_300_799_999)
INTEGER_COLUMNS = ("timestamp", "visitorid", "itemid")

# First bytes -> pyarrow codec (None: refused, with what to do instead).
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"))
_REFUSED = ((b"PK\x03\x04", "a zip archive: extract events.csv from it first"),
            (b"\xfd7zXZ\x00", "xz-compressed: decompress it first (or use gzip)"),
            (b"PAR1", "a Parquet file: export it as CSV"),
            (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
            (b"\xfe\xff", "UTF-16 text: save it as UTF-8"))
_HEADER_LIMIT = 1 << 20  # a header line longer than this is not a Retail Rocket header


def missing_file_message(path: Path) -> str:
    """Where to get the file and where to put it."""
    return (f"events file {path} not found: download events.csv of the \"Retailrocket recommender "
            f"system dataset\" from Kaggle ({KAGGLE_URL}) and put it at {DEFAULT_EVENTS_PATH} "
            f"or pass its path")


def check_events_file(path: str | os.PathLike) -> Path:
    """``path`` if it is an existing file, else InputError (missing: where to get it)."""
    path = Path(path)
    if not path.exists():
        raise InputError(missing_file_message(path))
    if not path.is_file():
        raise InputError(f"events path {path} is not a file")
    return path


def compression_of(path: Path) -> str | None:
    """The pyarrow codec of a compressed file, by its first bytes; None for plain text.

    InputError for a known binary format that cannot be read.
    """
    with open(path, "rb") as handle:
        magic = handle.read(8)
    for prefix, codec in _COMPRESSED:
        if magic.startswith(prefix):
            return codec
    for prefix, what in _REFUSED:
        if magic.startswith(prefix):
            raise InputError(f"events file {path} is {what}")
    return None


def _open(path: Path, codec: str | None):
    import pyarrow as pa

    return pa.input_stream(str(path), compression=codec)


def _not_text(path: Path, start: bytes) -> InputError:
    return InputError(f"events file {path} is not CSV text (binary content; it starts with "
                      f"{excerpt(start, 12)})")


def _read_header(path: Path, codec: str | None) -> list[str]:
    try:
        with _open(path, codec) as stream:
            first = b""
            while b"\n" not in first and len(first) < _HEADER_LIMIT:
                block = stream.read(1 << 16)
                if not block:
                    break
                first += block
    except OSError as exc:  # a damaged compressed stream
        raise InputError(f"cannot read events file {path} ({codec}): "
                         f"{excerpt(str(exc), 80)}") from None
    if b"\x00" in first[:1 << 16]:
        raise _not_text(path, first)
    line = first.split(b"\n", 1)[0].rstrip(b"\r")
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    if not line.strip():
        raise InputError(f"events file {path} is empty (expected a CSV header with columns "
                         f"{', '.join(REQUIRED_COLUMNS)})")
    if len(line) >= _HEADER_LIMIT:
        raise _not_text(path, first)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise _not_text(path, first) from None
    if not text.replace("\t", " ").isprintable():  # control characters: not a CSV export
        raise _not_text(path, first)
    return [name.strip().strip('"') for name in text.split(",")]


def read_events(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The needed columns of an ``events.csv`` as numpy arrays, validated.

    Returns ``timestamp`` (int64 ms), ``visitorid`` (int64), ``itemid`` (int64) and ``event``
    (int8 index into ``EVENT_TYPES``), in file order. Raises ``InputError`` for a missing file,
    binary content, missing columns, empty or non-integer values and timestamps out of range
    (with a line number) and unknown event types.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    path = check_events_file(path)
    codec = compression_of(path)
    header = _read_header(path, codec)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(f"events file {path} lacks column(s) {', '.join(missing)} "
                         f"(found: {excerpt(','.join(header), 40) if header else 'nothing'}; "
                         f"expected timestamp,visitorid,event,itemid,transactionid)")
    types = {c: pa.int64() for c in INTEGER_COLUMNS}
    types["event"] = pa.dictionary(pa.int32(), pa.string())
    try:
        table = pacsv.read_csv(
            _open(path, codec),
            read_options=pacsv.ReadOptions(block_size=1 << 24),
            convert_options=pacsv.ConvertOptions(include_columns=list(REQUIRED_COLUMNS),
                                                 column_types=types),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        table = _read_slow(path, codec, exc)
    except OSError as exc:
        raise InputError(f"cannot read events file {path}: {excerpt(str(exc), 80)}") from None
    if table.num_rows == 0:
        raise InputError(f"events file {path} has a header but no events")
    columns: dict[str, np.ndarray] = {}
    for name in INTEGER_COLUMNS:
        column = table.column(name)
        if column.null_count:
            row = _first_null(column)
            raise InputError(f"events file {path}: empty value in column {name} (line {row + 2})")
        columns[name] = column.to_numpy().astype(np.int64, copy=False)
    _check_timestamps(path, columns["timestamp"])
    columns["event"] = _event_codes(path, table.column("event"))
    return columns


def _check_timestamps(path: Path, timestamp: np.ndarray) -> None:
    low, high = TIMESTAMP_RANGE_MS
    if len(timestamp) == 0 or (int(timestamp.min()) >= low and int(timestamp.max()) <= high):
        return
    row = int(np.flatnonzero((timestamp < low) | (timestamp > high))[0])
    raise InputError(f"events file {path}: timestamp {int(timestamp[row])} (line {row + 2}) is not "
                     f"a date of years 1-9999; expected milliseconds since 1970-01-01 UTC")


def _first_null(column) -> int:
    import pyarrow.compute as pc

    mask = pc.is_null(column).to_numpy(zero_copy_only=False)
    return int(np.flatnonzero(mask)[0])


def _read_slow(path: Path, codec: str | None, error: Exception):
    """Re-read the needed columns as text after a fast read failed; say what and where is wrong.

    Integral values written as floats (``123.0``) are accepted; anything else that is not an
    integer raises ``InputError`` naming the column and the first bad line.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            _open(path, codec),
            convert_options=pacsv.ConvertOptions(
                include_columns=list(REQUIRED_COLUMNS),
                column_types={c: pa.string() for c in REQUIRED_COLUMNS},
                strings_can_be_null=True),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(f"cannot read events file {path} as CSV: {excerpt(str(exc), 80)}") from None
    fixed = {}
    for name in INTEGER_COLUMNS:
        column = table.column(name)
        ok = pc.match_substring_regex(column, r"^\s*-?[0-9]+(\.0*)?\s*$")
        ok = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            value = column[row].as_py()
            what = ("empty value" if value is None or not value.strip()
                    else f"non-integer value {excerpt(value, 30)}")
            raise InputError(f"events file {path}: {what} in column {name} (line {row + 2}); "
                             f"timestamp (ms), visitorid and itemid must be integers")
        stripped = pc.replace_substring_regex(pc.utf8_trim_whitespace(column), r"\.0*$", "")
        try:
            fixed[name] = pc.cast(stripped, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            row = _first_beyond_int64(stripped)
            raise InputError(f"events file {path}: value {excerpt(stripped[row].as_py(), 30)} in "
                             f"column {name} (line {row + 2}) is out of the 64-bit integer "
                             f"range") from None
    if not fixed:
        raise InputError(f"cannot read events file {path}: {excerpt(str(error), 80)}")
    return pa.table({"timestamp": fixed["timestamp"], "visitorid": fixed["visitorid"],
                     "event": table.column("event"), "itemid": fixed["itemid"]})


def _first_beyond_int64(column) -> int:
    """Row of the first integer text in ``column`` that does not fit int64."""
    import pyarrow.compute as pc

    lengths = pc.utf8_length(column).to_numpy(zero_copy_only=False)
    bound = np.iinfo(np.int64)
    for row in np.flatnonzero(lengths >= 19):  # shorter numbers always fit
        if not bound.min <= int(column[int(row)].as_py()) <= bound.max:
            return int(row)
    return 0


def _event_codes(path: Path, column) -> np.ndarray:
    """int8 codes into EVENT_TYPES; InputError naming (a few) unknown or empty event types."""
    import pyarrow as pa

    known = {name: code for code, name in enumerate(EVENT_TYPES)}
    parts = []
    unknown: set[str] = set()
    first_bad: int | None = None
    offset = 0
    for chunk in column.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary_encode()
        words = chunk.dictionary.to_pylist()
        lookup = np.array([known.get((w or "").strip(), -1) for w in words] + [-1], dtype=np.int8)
        indices = chunk.indices.fill_null(len(words)).to_numpy(zero_copy_only=False)
        codes = lookup[indices]
        bad = codes < 0
        if bad.any():
            bad_words = np.unique(indices[bad])
            unknown.update("(empty)" if i == len(words) or not (words[i] or "").strip() else words[i]
                           for i in bad_words)
            if first_bad is None:
                first_bad = offset + int(np.flatnonzero(bad)[0])
        parts.append(codes)
        offset += len(chunk)
    if unknown:
        names = sorted(unknown)
        shown = ", ".join(n if n == "(empty)" else excerpt(n, 20) for n in names[:3])
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        raise InputError(f"events file {path}: unknown event type(s) {shown}{more} (first at line "
                         f"{first_bad + 2}; known: {', '.join(EVENT_TYPES)})")
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int8)
