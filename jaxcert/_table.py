"""Result files written one row at a time, that an interrupted run can resume.

A run writes `PATH` (tab- or comma-separated, a header line, one row per item, each row
written whole and flushed at once) and `PATH.json` (the run's settings). With `resume`, the rows
already in the file are kept, a trailing partial row (a run killed mid-write) is cut off, and the
caller skips the items whose keys are already there; the settings must match the earlier run's.
"""

import json
import os
from pathlib import Path


class ResumableTable:
    """An append-only table file of rows keyed by their first column(s).

    Args:
      path: the file.
      columns: column names; the first `keys` columns hold the row key (e.g. the image index).
      settings: JSON-able settings of the run, stored beside the file and compared on resume.
      resume: keep and continue an existing file instead of refusing to overwrite it.
      delimiter: "\t" (default) or ",".
      keys: how many leading columns make up the key.
    """

    def __init__(self, path, columns, settings, resume=False, delimiter="\t", keys=1):
        self.path = Path(path)
        self.columns = list(columns)
        self.delimiter, self.keys = delimiter, keys
        self.settings_path = self.path.with_name(self.path.name + ".json")
        self.done = {}
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
        if not self.settings_path.exists():
            raise ValueError(f"cannot resume {self.path}: its settings file is missing")
        before = json.loads(self.settings_path.read_text())
        wanted = json.loads(json.dumps(settings, sort_keys=True))
        if before != wanted:
            changed = sorted(k for k in set(before) | set(wanted) if before.get(k) != wanted.get(k))
            raise ValueError(
                f"cannot resume {self.path}: settings differ from the earlier run in {changed}"
            )

    def _load(self):
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):  # cut off a row that was being written when killed
            with open(self.path, "r+b") as f:
                f.truncate(len(complete))
                os.fsync(f.fileno())
        lines = complete.decode().splitlines()
        if not lines or lines[0].split(self.delimiter) != self.columns:
            raise ValueError(f"cannot resume {self.path}: its header is not {self.columns}")
        for line in lines[1:]:
            values = line.split(self.delimiter)
            if len(values) != len(self.columns):
                raise ValueError(f"cannot resume {self.path}: malformed row {line!r}")
            self.done[self.key(values)] = dict(zip(self.columns, values))
