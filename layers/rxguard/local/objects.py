"""Directories standing in for the buckets of the workflow (docs/local.md).

`LocalObjects` has the methods of `rxguard.dynamo.ResultStore` that the workflow steps
call, on files under a root directory (keys are relative paths; writes go through a
temporary file and a rename, so a killed run never leaves half a results file).
`InputFiles` is the ingest bucket of one run: the files given on the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from rxguard.dynamo import ResultStore
from rxguard.errors import BatchInputError


class LocalObjects(ResultStore):
    """Objects of a bucket, as files under `root` (every method of ResultStore overridden)."""

    def __init__(self, root: Path) -> None:  # no S3 client: nothing of the parent is used
        self.bucket = "local"
        self.root = Path(root).resolve()  # absolute: object URIs are file:// URIs
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        rel = PurePosixPath(key)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise BatchInputError(f"object key outside the bucket: {key!r}")
        return self.root.joinpath(*rel.parts)

    def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target.as_uri()

    def put_json(self, key: str, data: Any) -> str:
        return self.put_bytes(
            key, json.dumps(data, ensure_ascii=False, default=str).encode("utf-8"), "application/json"
        )

    def upload_file(self, key: str, path: Path, content_type: str = "application/x-ndjson") -> str:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{target.name}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        return target.as_uri()

    def move_file(self, key: str, path: Path, content_type: str = "application/x-ndjson") -> str:
        """The file becomes the object (renamed: a chunk of a 1M-line batch is not copied
        ~600 MB in all); copied and removed when it is on another file system."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, target)
        except OSError:  # another file system: copied, then removed
            return super().move_file(key, path, content_type)
        return target.as_uri()

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def download(self, key: str, path: Path, version_id: str | None = None) -> Path:
        shutil.copyfile(self.path(key), path)
        return path


class InputFiles(LocalObjects):
    """The ingest bucket of one run: key -> the file given on the command line. Prepare
    "downloads" a file by linking it into its working directory (no copy of a 1 GB file)."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.bucket = "local"
        self.files = {key: Path(p).resolve() for key, p in files.items()}

    def path(self, key: str) -> Path:
        try:
            return self.files[key]
        except KeyError:
            raise BatchInputError(f"no input file for key {key!r}") from None

    def put_bytes(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        raise BatchInputError("the input files are read-only")

    def move_file(self, key: str, path: Path, content_type: str = "application/x-ndjson") -> str:
        raise BatchInputError("the input files are read-only")

    def download(self, key: str, path: Path, version_id: str | None = None) -> Path:
        source = self.path(key)
        try:
            path.symlink_to(source)
        except OSError:
            shutil.copyfile(source, path)
        return path
