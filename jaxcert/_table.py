"""Result files written one row at a time, that an interrupted run can resume.

A run writes `PATH` (tab- or comma-separated, a header line, one row per item, each row
written whole and flushed at once) and `PATH.json` (the run's settings). With `resume`, the rows
already in the file are kept and the caller skips the items whose keys are already there; the
settings must match the earlier run's.

A file is trusted only if every line parses. A last line without its newline is a row cut short
by an interrupted write: it is dropped (said on stderr) and its item is redone. Anything else
that does not parse (a row with a wrong number of fields or a value that is not of its column's
kind, anywhere before the last line) and a key that appears twice are errors naming the file
and the line: such a file was edited or corrupted, and continuing it would mix in rows that
cannot be trusted.
"""

import json
import math
import os
import re
import sys
from pathlib import Path

STATUSES = ("verified", "falsified", "unknown", "unconfirmed")
_TIMEDELTA = re.compile(r"(?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)")


def _integer(minimum=None):
    def check(text):
        value = int(text)
        if str(value) != text:  # "01" or " 1" would be another key than "1"
            raise ValueError("is not an integer in plain decimal form")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= {minimum}")
        return value

    return check


def _number(text):
    value = float(text)
    if math.isnan(value):
        raise ValueError("must not be NaN")
    return value


def _probability(text):
    value = _number(text)
    if not 0 <= value <= 1:
        raise ValueError("must lie in [0, 1]")
    return value


def _radius(text):
    value = _number(text)
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


def seconds(text):
    """A time column's value in seconds: jaxcert writes float seconds (`repr(float)`); logs of
    certify and predict before it wrote `str(datetime.timedelta)`, e.g. "0:00:01.085999".

    Raises:
      ValueError: neither form, or a negative or NaN number.
    """
    old = _TIMEDELTA.fullmatch(text)
    if old:
        days, hours, minutes, secs = old.groups()
        return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + float(secs)
    value = _number(text)
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


def _choice(allowed):
    def check(text):
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return check


def _text(text):
    if not text:
        raise ValueError("must not be empty")
    return text


FIELDS = {
    "idx": _integer(0),
    "label": _integer(0),
    "predict": _integer(-1),
    "correct": _choice(("0", "1")),
    "radius": _radius,
    "time": seconds,
    "nA": _integer(0),
    "nB": _integer(0),
    "n": _integer(0),
    "pA_lower": _probability,
    "seed": _integer(),
    "status": _choice(STATUSES),
    "margin_lower": float,
    "margin_upper": float,
    "target": _integer(),
    "binaries": _integer(0),
    "onnx": _text,
    "vnnlib": _text,
    "result": _text,
    "seconds": _radius,
}
"""What a value of each column jaxcert writes must parse as; other columns are not checked."""


def read_table(path, delimiter="\t", keys=1, columns=None):
    """Parse a table file, checking every row.

    Args:
      path: the file.
      delimiter: "\t" or ",".
      keys: how many leading columns make up a row's key, which must not repeat.
      columns: the header the file must have, or None to accept any.

    Returns:
      (header, rows as dicts of strings in file order, line number of a dropped cut-off last
      line or None, length in bytes of the file without that line).

    Raises:
      ValueError: naming the file and line of a bad header, a malformed row or a repeated key.
    """
    path = Path(path)
    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    lines = complete.split(b"\n")[:-1]
    torn = len(lines) + 1 if len(complete) != len(raw) else None
    if not lines:
        raise ValueError(f"{path} has no complete header line")
    header = _decode(path, 1, lines[0]).split(delimiter)
    if columns is not None and header != list(columns):
        raise ValueError(f"{path}, line 1: the header is not {delimiter.join(columns)!r}")
    rows, seen = [], {}
    for number, line in enumerate(lines[1:], start=2):
        values = _decode(path, number, line).split(delimiter)
        if len(values) != len(header):
            raise ValueError(
                f"{path}, line {number}: malformed row, {len(values)} fields instead of "
                f"{len(header)} (the file was edited or corrupted; remove the line to go on)"
            )
        for column, value in zip(header, values):
            if column in FIELDS:
                try:
                    FIELDS[column](value)
                except ValueError as err:
                    raise ValueError(
                        f"{path}, line {number}: malformed row, {column} {value!r} {err}"
                    ) from None
        key = tuple(values[:keys])
        if key in seen:
            raise ValueError(
                f"{path}, line {number}: duplicate row, the key {delimiter.join(key)!r} is "
                f"already on line {seen[key]} (remove one of the two to go on)"
            )
        seen[key] = number
        rows.append(dict(zip(header, values)))
    return header, rows, torn, len(complete)


def _decode(path, number, line):
    try:
        return line.decode()
    except UnicodeDecodeError:
        raise ValueError(f"{path}, line {number}: not UTF-8 text") from None


class ResumableTable:
    """An append-only table file of rows keyed by their first column(s).

    Args:
      path: the file.
      columns: column names; the first `keys` columns hold the row key (e.g. the image index).
      settings: JSON-able settings of the run, stored beside the file and compared on resume.
      resume: keep and continue an existing file instead of refusing to overwrite it.
      delimiter: "\t" (default) or ",".
      keys: how many leading columns make up the key.

    Raises:
      FileExistsError: the file exists and `resume` is False.
      ValueError: on resume, other settings or a file that does not parse (see the module).
    """

    def __init__(self, path, columns, settings, resume=False, delimiter="\t", keys=1):
        self.path = Path(path)
        self.columns = list(columns)
        self.delimiter, self.keys = delimiter, keys
        self.settings_path = self.path.with_name(self.path.name + ".json")
        self.done = {}
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a directory, not a result file")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not resume:
            raise FileExistsError(
                f"{self.path} already exists: pass --resume to continue it, or choose another --out"
            )
        if exists:
            self._check_settings(settings)
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.settings_path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
            self.path.write_text(delimiter.join(self.columns) + "\n")
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())

    def write(self, row):
        """Append one row (a dict with every column) and flush it to the operating system."""
        values = [str(row[c]) for c in self.columns]
        self._file.write(self.delimiter.join(values) + "\n")
        self._file.flush()
        self.done[self.key(values)] = dict(zip(self.columns, values))

    def key(self, values):
        """The key of a row given as its values in column order: a string, or a tuple."""
        return values[0] if self.keys == 1 else tuple(values[: self.keys])

    def rows(self):
        """All rows so far, in file order, as dicts of strings."""
        return list(self.done.values())

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_settings(self, settings):
        before = read_settings(self.path)
        if before is None:
            raise ValueError(f"cannot resume {self.path}: its settings file is missing")
        wanted = json.loads(json.dumps(settings, sort_keys=True))
        if before != wanted:
            changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
            raise ValueError(
                f"cannot resume {self.path}: settings differ from the earlier run in {changed}"
                + _model_note(before, wanted, changed)
            )

    def _load(self):
        if self.path.read_bytes().find(b"\n") < 0:  # killed while writing the header
            self.path.write_text(self.delimiter.join(self.columns) + "\n")
            print(f"{self.path}: rewrote its header, cut short by an interrupted write",
                  file=sys.stderr)  # fmt: skip
            return
        _, rows, torn, length = read_table(self.path, self.delimiter, self.keys, self.columns)
        if torn is not None:
            with open(self.path, "r+b") as f:
                f.truncate(length)
                os.fsync(f.fileno())
            print(
                f"{self.path}: dropped line {torn}, a row cut short by an interrupted write; "
                "its item is redone",
                file=sys.stderr,
            )
        for row in rows:
            self.done[self.key([row[c] for c in self.columns])] = row


def read_settings(path):
    """The settings `FILE.json` beside a table file, or None when there is none.

    Raises:
      ValueError: naming the settings file when it is not a JSON object.
    """
    settings_path = Path(path).with_name(Path(path).name + ".json")
    if not settings_path.exists():
        return None
    try:
        settings = json.loads(settings_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{settings_path} is not valid JSON ({err})") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{settings_path} does not hold a JSON object of settings")
    return settings


def _model_note(before, wanted, changed):
    """A hint when the difference is the noise stream, or the model's content at an unchanged
    path."""
    if "noise_stream" in changed:
        return (
            "; the earlier run drew its noise from another noise stream (an older jaxcert), so "
            "its counts cannot be continued: start a new --out"
        )
    if "model_sha256" not in changed or "model" in changed:
        return ""
    if "model_sha256" not in before:
        return (
            "; the earlier run recorded no hash of its model's parameters (an older jaxcert), "
            "so it cannot be checked to be the same model: start a new --out"
        )
    return (
        f"; the model at {wanted.get('model')} is not the one the earlier run used (its "
        "parameters or architecture changed since): start a new --out"
    )
