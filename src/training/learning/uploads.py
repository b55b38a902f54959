"""Uploaded data sets: streamed to disk, checked, stored by content hash, described once.

An upload is written to a temporary file while its sha256 and size are computed, stopped at
the limit, checked line by line as CSV, then moved into place under its hash: the same file
twice is one data set, and the client's file name is never used. Its id (``ds_`` and the first
16 hex digits of the hash) is what ``POST /runs`` and ``training train --dataset`` accept; a
path on the server's disk is never accepted from the network.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from training.errors import NotFound, TooLarge, Unprocessable
from training.learning.columns import DatasetMeta, describe
from training.settings import Settings, load

_ID = re.compile(r"ds_[0-9a-f]{16}")
_PARSING = threading.Semaphore(1)


def is_dataset_id(spec: str) -> bool:
    return bool(_ID.fullmatch(spec))


def uploads_dir() -> Path:
    return load(Settings).data_dir / "datasets"


def upload_path(dataset_id: str) -> Path:
    path = uploads_dir() / f"{dataset_id}.csv"
    if not is_dataset_id(dataset_id) or not path.is_file():
        raise NotFound(f"no uploaded dataset {dataset_id!r}", field="dataset")
    return path


def read_meta(dataset_id: str) -> DatasetMeta:
    upload_path(dataset_id)
    try:
        text = (uploads_dir() / f"{dataset_id}.json").read_text()
    except FileNotFoundError as exc:  # half-stored (a crash mid-upload): as good as absent
        raise NotFound(f"no uploaded dataset {dataset_id!r}", field="dataset") from exc
    return DatasetMeta.model_validate_json(text)


def list_uploads() -> list[DatasetMeta]:
    folder = uploads_dir()
    if not folder.is_dir():
        return []
    return [
        DatasetMeta.model_validate_json(p.read_bytes())
        for p in sorted(folder.glob("ds_*.json"))
        if p.with_suffix(".csv").is_file()
    ]


def check_csv(path: Path) -> None:
    """Refuse a file that is not a CSV table, naming the line and the reason."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, strict=True)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise Unprocessable("line 1: no header row", field="body")
            names = [h.strip() for h in header]
            if any("\x00" in name for name in names):
                raise Unprocessable("line 1: a NUL character is not text", field="body")
            if any(not n for n in names):
                raise Unprocessable(
                    f"line 1: column {names.index('') + 1} has no name", field="body"
                )
            if len(set(names)) != len(names):
                raise Unprocessable("line 1: duplicate column names", field="body")
            if len(names) < 2:
                raise Unprocessable(
                    "line 1: a data set needs a target and at least one feature column",
                    field="body",
                )
            for row in reader:
                if any("\x00" in value for value in row):  # the run store could not hold it
                    raise Unprocessable(
                        f"line {reader.line_num}: a NUL character is not text", field="body"
                    )
                if row and len(row) != len(names):
                    raise Unprocessable(
                        f"line {reader.line_num}: expected {len(names)} fields, found {len(row)}",
                        field="body",
                    )
    except UnicodeDecodeError as exc:
        raise Unprocessable(
            f"not UTF-8 text (byte {exc.start} of a chunk cannot be decoded)", field="body"
        ) from exc
    except csv.Error as exc:
        raise Unprocessable(f"line {reader.line_num}: {exc}", field="body") from exc


def _finish(tmp: Path, digest: str) -> tuple[DatasetMeta, bool]:
    """Check and describe a complete upload, then move it into place under its hash."""
    import pandas as pd

    dataset_id = f"ds_{digest[:16]}"
    final, meta_path = uploads_dir() / f"{dataset_id}.csv", uploads_dir() / f"{dataset_id}.json"
    if final.is_file() and meta_path.is_file():
        tmp.unlink()
        return read_meta(dataset_id), False
    try:
        check_csv(tmp)
        # One upload parsed at a time: pandas can take many times the file's size in memory.
        with _PARSING:
            try:
                frame = pd.read_csv(tmp)
            except (pd.errors.ParserError, ValueError) as exc:
                raise Unprocessable(
                    f"not a readable CSV: {str(exc).strip().splitlines()[-1]}", field="body"
                ) from exc
            meta = describe(dataset_id, frame, digest)
            del frame
        # The description first, the data last: a data file in place always has its
        # description, and concurrent identical uploads each write a staging file of their own.
        staged = tmp.with_suffix(".json")
        staged.write_text(meta.model_dump_json())
        os.replace(staged, meta_path)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return meta, True


async def store_upload(chunks: AsyncIterator[bytes], max_bytes: int) -> tuple[DatasetMeta, bool]:
    """Stream an upload to disk (hash and count as it comes, stop past the limit), then check,
    describe and keep it; returns its description and whether it was new."""
    from anyio.to_thread import run_sync

    staging = uploads_dir() / "incoming"
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{uuid.uuid4().hex}.part"
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"upload is larger than {max_bytes} bytes", field="body")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise Unprocessable("line 1: the upload is empty", field="body")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Checking and describing parse the whole file: off the event loop.
    return await run_sync(_finish, tmp, digest.hexdigest())
