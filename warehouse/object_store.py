"""Warehouse tables as Parquet on S3-compatible object storage, switched atomically by a commit log.

DuckDB stays the query engine: a write is staged in a local DuckDB file exactly as the DuckDB backend stages
it (``<name>__staging`` tables, the same ``validate(con, staged_names)`` callback), exported as Parquet parts
and uploaded under a fresh, immutable version; one small JSON manifest then publishes the new versions of every
table of the write at once. Many writers on different machines can write the same warehouse.

Layout under ``s3://bucket/prefix``::

    tables/<name>/<version>/part-00000.parquet    immutable data of one version of a table (several parts
                                                   when it is large; the version is a fresh uuid per write)
    _manifests/<sequence:020d>.json               the commit log: manifest n maps every table to its version
                                                   (parts, row count, schema) and names its parent (n-1)

Protocol:

* **Read**: list ``_manifests/`` (keys are zero-padded, so S3's lexicographic order is numeric order; listing
  starts after the newest sequence this process has seen) and read the newest manifest. Every table of one
  read or one ``connect()`` comes from that one manifest: a consistent snapshot. Parts are downloaded once
  into a local cache (correct forever: a version never changes) and queried with DuckDB.
* **Write** (:meth:`ObjectStoreWarehouse.replace`): stage locally, ``validate``, upload the parts of every
  table under new version keys, then create manifest ``newest + 1`` = newest's tables with this write's
  tables on top, with S3's conditional create (``PutObject`` with ``If-None-Match: *``). A writer that loses
  the race (HTTP 412/409) re-reads the newest manifest, re-applies its own tables on top of it (its tables
  win, every other table keeps the newest state) and tries the next number, until ``commit_timeout_s``.
  After a create it re-reads its manifest and the next one, if any, to confirm it is part of the chain
  (this also catches a store whose conditional create is not atomic, see below).
* **Nothing half-written is visible**: a refused validation or a failed chunk uploads nothing; a writer killed
  during the upload or the commit leaves only objects that no manifest references.
* **Garbage collection** (:meth:`ObjectStoreWarehouse.vacuum`): deletes version objects that no kept manifest
  references and that were last written more than ``older_than`` ago, and manifests that stopped being the
  newest more than ``older_than`` ago (the newest ``keep_manifests`` are always kept). ``older_than`` must be
  longer than the longest write (stage + validate + upload + commit) and the longest read, or vacuum can
  delete a version that a slow writer is about to publish or a slow reader is downloading (a reader retries
  on the newest manifest once; a writer's commit fails). Run it from one place, e.g. a daily job.

The store must implement ``If-None-Match: *`` on ``PutObject`` atomically (AWS S3 since August 2024, MinIO,
Cloudflare R2, Ceph RGW recent releases). moto's server (used by the tests) checks and writes without a lock:
two creates of one key can both succeed; the confirm step makes the loser retry.

Credentials, region and endpoint come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``/``AWS_REGION``, ``AWS_ENDPOINT_URL``
or ``AWS_ENDPOINT_URL_S3``, ``AWS_PROFILE``) through boto3; they are never logged or put in messages.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from warehouse.tables import STAGING_SUFFIX, TableWriteError, _ident, _stage, close, connect

SCHEME = "s3://"
MANIFESTS = "_manifests"
TABLES = "tables"
FORMAT = 1
_MANIFEST_NAME = re.compile(r"^(\d{20})\.json$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}


class WarehouseConflictError(TableWriteError):
    """Other writers kept committing first until the commit timeout; no table changed."""


class WarehouseObjectMissingError(RuntimeError):
    """A manifest references an object that is gone (deleted by hand, or vacuumed with a too short window)."""


class _Missing(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def is_object_store_url(location: str | os.PathLike) -> bool:
    return str(location).lower().startswith(SCHEME)


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; a clear ``ValueError`` for anything else."""
    if not is_object_store_url(url):
        raise ValueError(f"not an object-store warehouse location: {url!r} (expected s3://bucket/prefix)")
    bucket, _, prefix = str(url)[len(SCHEME):].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"invalid S3 bucket name {bucket!r} in warehouse location {url!r}")
    prefix = prefix.strip("/")
    segments = prefix.split("/") if prefix else []
    if any(s in ("", ".", "..") for s in segments):
        raise ValueError(f"invalid prefix {prefix!r} in warehouse location {url!r}: empty, '.' or '..' segment")
    return bucket, prefix


# --------------------------------------------------------------------------------------------------- client
_CLIENTS: dict[tuple, object] = {}
_CLIENTS_LOCK = threading.Lock()


def _env_identity() -> tuple:
    """What selects the S3 endpoint and identity (secrets only as a hash: this is a cache key, never shown)."""
    env = os.environ
    secret = hashlib.sha256((env.get("AWS_SECRET_ACCESS_KEY", "") + env.get("AWS_SESSION_TOKEN", "")).encode())
    return (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            env.get("AWS_PROFILE"), env.get("AWS_ACCESS_KEY_ID"), secret.hexdigest())


def s3_client():
    """A boto3 S3 client for the current AWS environment variables (one per identity; clients are thread-safe)."""
    identity = _env_identity()
    with _CLIENTS_LOCK:  # boto3 sessions are not thread-safe: create clients one at a time
        client = _CLIENTS.get(identity)
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:  # pragma: no cover - the production extra installs it
                raise ImportError("the S3 warehouse needs boto3: pip install 'deepinterestgr[production]'") from exc
            endpoint, region = identity[0], identity[1]
            client = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=region,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32))
            _CLIENTS[identity] = client
    return client


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _http_status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


# ------------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class Manifest:
    """One entry of the commit log: the complete state of the warehouse after one write."""

    sequence: int
    id: str
    parent: str | None
    created_at: str
    tables: dict[str, dict]
    changed: list[str] = field(default_factory=list)
    writer: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps({"format": FORMAT, "sequence": self.sequence, "id": self.id, "parent": self.parent,
                           "created_at": self.created_at, "changed": self.changed, "writer": self.writer,
                           "tables": self.tables}, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        doc = json.loads(data)
        if int(doc.get("format", 0)) > FORMAT:
            raise RuntimeError(f"{where} has manifest format {doc['format']}; this version reads up to {FORMAT}")
        return cls(sequence=int(doc["sequence"]), id=doc["id"], parent=doc.get("parent"),
                   created_at=doc["created_at"], tables=doc["tables"], changed=doc.get("changed", []),
                   writer=doc.get("writer", {}))


@dataclass
class VacuumReport:
    manifests_deleted: int = 0
    versions_deleted: int = 0
    objects_deleted: int = 0
    bytes_deleted: int = 0
    versions_kept: int = 0
    cache_versions_deleted: int = 0


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _parquet_source(paths: list[Path]) -> str:
    return "read_parquet([" + ", ".join(_sql_str(str(p)) for p in paths) + "])"


# ------------------------------------------------------------------------------------------------ warehouse
class ObjectStoreWarehouse:
    """The warehouse at ``s3://bucket/prefix``: ``read``, ``exists``, ``replace``, ``connect`` like the DuckDB file.

    ``cache_dir`` holds downloaded parts (immutable, so never stale) and the local staging of writes.
    ``part_rows`` rows go into the first Parquet part of a table; later parts aim at ``part_bytes`` each.
    """

    def __init__(self, url: str, *, cache_dir: str | os.PathLike | None = None, part_rows: int = 100_000,
                 part_bytes: int = 128 * 2**20, commit_timeout_s: float = 300.0, list_page_size: int = 1000,
                 client=None) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.url = f"{SCHEME}{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        if part_rows < 1 or part_bytes < 1:
            raise ValueError(f"part_rows and part_bytes must be positive, got {part_rows} and {part_bytes}")
        if not 1 <= list_page_size <= 1000:
            raise ValueError(f"list_page_size must be within 1..1000 (S3's limit), got {list_page_size}")
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "digr-warehouse-cache"
        self.part_rows = int(part_rows)
        self.part_bytes = int(part_bytes)
        self.commit_timeout_s = float(commit_timeout_s)
        self.list_page_size = int(list_page_size)
        self._client = client
        self._hint = 0  # newest sequence this process has seen: listing starts after it
        self._cached: Manifest | None = None

    def __repr__(self) -> str:
        return f"ObjectStoreWarehouse({self.url!r})"

    # ---- keys, client and listing
    @property
    def client(self):
        return self._client if self._client is not None else s3_client()

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _manifest_key(self, sequence: int) -> str:
        return self._key(f"{MANIFESTS}/{sequence:020d}.json")

    def _cache_path(self, relative: str) -> Path:
        return self.cache_dir / self.bucket / self._key(relative)

    def _call(self, what: str, fn: Callable, **kwargs):
        """A boto3 call whose bucket/endpoint errors name the warehouse (never the credentials)."""
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            code = _error_code(exc)
            if code == "NoSuchBucket":
                raise FileNotFoundError(f"S3 bucket {self.bucket!r} of warehouse {self.url} does not exist "
                                        f"(endpoint {_env_identity()[0] or 'AWS default'})") from exc
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise PermissionError(f"{what} on warehouse {self.url} refused ({code}): check the AWS "
                                      "credentials in the environment") from exc
            raise

    def _list(self, relative_dir: str, start_after: str | None = None) -> Iterator[dict]:
        kwargs = {"Prefix": self._key(relative_dir) + "/", "MaxKeys": self.list_page_size}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            page = self._call("list", self.client.list_objects_v2, **kwargs)
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            kwargs.pop("StartAfter", None)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _manifest_objects(self, after: int = 0) -> list[tuple[int, dict]]:
        """(sequence, listing entry) of the manifests with a sequence above ``after``, in sequence order."""
        out = []
        for obj in self._list(MANIFESTS, self._manifest_key(after) if after else None):
            m = _MANIFEST_NAME.match(obj["Key"].rsplit("/", 1)[-1])
            if m:
                out.append((int(m.group(1)), obj))
        return sorted(out, key=lambda item: item[0])

    def _get_manifest(self, sequence: int) -> Manifest:
        key = self._manifest_key(sequence)
        try:
            body = self._call("read manifest", self.client.get_object, Key=key)["Body"].read()
        except Exception as exc:
            if _error_code(exc) in _MISSING_CODES:
                raise _Missing(key) from exc
            raise
        manifest = Manifest.from_json(body, f"s3://{self.bucket}/{key}")
        if manifest.sequence != sequence:
            raise RuntimeError(f"s3://{self.bucket}/{key} says it is manifest {manifest.sequence}")
        return manifest

    def newest_manifest(self) -> Manifest | None:
        """The current state of the warehouse (``None`` while nothing was ever written)."""
        for _ in range(3):
            hint = self._hint
            newer = self._manifest_objects(after=hint)
            sequence = newer[-1][0] if newer else hint
            if sequence == 0:
                return None
            cached = self._cached
            if cached is not None and cached.sequence == sequence:
                return cached
            try:
                manifest = self._get_manifest(sequence)
            except _Missing:
                self._hint = 0  # the hint was vacuumed (a newer one exists): list from the start
                continue
            self._hint, self._cached = max(self._hint, sequence), manifest
            return manifest
        raise WarehouseObjectMissingError(f"warehouse {self.url}: the newest manifest keeps disappearing")

    # ---- reads
    def table_names(self) -> list[str]:
        manifest = self.newest_manifest()
        return sorted(manifest.tables) if manifest else []

    def exists(self, name: str) -> bool:
        _ident(name)
        manifest = self.newest_manifest()
        return manifest is not None and name in manifest.tables

    def row_count(self, name: str) -> int:
        return int(self._entry(self.newest_manifest(), name)["rows"])

    def _entry(self, manifest: Manifest | None, name: str) -> dict:
        _ident(name)
        if manifest is None or name not in manifest.tables:
            raise KeyError(f"warehouse table {name!r} does not exist; materialise its asset first")
        return manifest.tables[name]

    def _download(self, relative: str, size: int) -> Path:
        path = self._cache_path(relative)
        if path.exists() and path.stat().st_size == size:
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
        try:
            try:
                body = self._call("read", self.client.get_object, Key=self._key(relative))["Body"]
            except Exception as exc:
                if _error_code(exc) in _MISSING_CODES:
                    raise _Missing(self._key(relative)) from exc
                raise
            with open(tmp, "wb") as fh:
                for block in iter(lambda: body.read(1 << 20), b""):
                    fh.write(block)
            if tmp.stat().st_size != size:
                raise OSError(f"s3://{self.bucket}/{self._key(relative)}: got {tmp.stat().st_size} bytes, "
                              f"the manifest says {size}")
            os.replace(tmp, path)  # atomic: a concurrent reader sees the whole file or none
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def _local_parts(self, entries: Mapping[str, dict]) -> dict[str, list[Path]]:
        jobs = [(name, i, part) for name, entry in entries.items() for i, part in enumerate(entry["parts"])]
        with ThreadPoolExecutor(max_workers=min(4, max(1, len(jobs)))) as pool:
            paths = list(pool.map(lambda job: self._download(job[2]["key"], int(job[2]["bytes"])), jobs))
        out: dict[str, list[Path]] = {name: [] for name in entries}
        for (name, _, _), path in zip(jobs, paths, strict=True):
            out[name].append(path)
        return out

    def _snapshot(self, names: Iterable[str] | None = None) -> tuple[Manifest | None, dict[str, dict],
                                                                      dict[str, list[Path]]]:
        """One manifest and local copies of the parts of ``names`` (all tables when None)."""
        missing = None
        for _ in range(3):
            manifest = self.newest_manifest()
            wanted = list(manifest.tables) if (names is None and manifest) else list(names or [])
            entries = {name: self._entry(manifest, name) for name in wanted}
            try:
                return manifest, entries, self._local_parts(entries)
            except _Missing as exc:  # vacuumed under us: a newer manifest no longer needs it
                missing = exc
                self._cached = None
        raise WarehouseObjectMissingError(
            f"warehouse {self.url}: object s3://{self.bucket}/{missing.key} referenced by the newest manifest is "
            "missing (deleted by hand, or vacuum ran with an older_than shorter than a write)")

    def read(self, name: str, *, order_by: str | None = None) -> pd.DataFrame:
        """The whole table as pandas (DuckDB's conversion, as the DuckDB backend). ``order_by`` is SQL; ``rowid``
        there is the order the rows were written in (parts in order), as DuckDB's ``rowid`` of a written table."""
        _, entries, files = self._snapshot([name])
        source = _parquet_source(files[name])
        columns = {col for col, _ in entries[name]["schema"]}
        con = connect(":memory:")
        try:
            if order_by and "rowid" not in columns:
                sql = (f"SELECT * EXCLUDE (rowid) FROM (SELECT *, (file_index::BIGINT << 40) + file_row_number "
                       f"AS rowid FROM {source}) ORDER BY {order_by}")
            else:
                sql = f"SELECT * FROM {source}" + (f" ORDER BY {order_by}" if order_by else "")
            return con.execute(sql).df()
        finally:
            close(con)

    @contextmanager
    def connect(self, *, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-memory DuckDB connection with every current table as a view (one manifest: a consistent
        snapshot). Always for reading (``read_only`` is accepted for the DuckDB backend's signature): what is
        created on it is lost on close; writes go through :meth:`replace`."""
        _, _, files = self._snapshot()
        con = connect(":memory:")
        try:
            for name, paths in files.items():
                con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM {_parquet_source(paths)}")
            yield con
        finally:
            close(con)

    # ---- writes
    def replace(self, tables: Mapping[str, pd.DataFrame | Iterable[pd.DataFrame]], *,
                validate: Callable[[duckdb.DuckDBPyConnection, Mapping[str, str]], None] | None = None
                ) -> dict[str, int]:
        """Replace several tables at once, all or nothing, safe beside writers on other machines.

        Same contract as :func:`warehouse.replace_tables`: DataFrames or iterables of chunks, streamed into
        local staging tables ``<name>__staging`` that ``validate(con, staged_names)`` may inspect and refuse.
        Returns ``{table: rows}``. A failure before the commit leaves every table at its previous version.
        Unlike the DuckDB file, the staging connection holds only the staged tables (not the live ones)."""
        for name in tables:
            _ident(name)
        staging_root = self.cache_dir / "_staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="replace-", dir=staging_root))
        try:
            con = connect(work / "stage.duckdb")
            try:
                counts: dict[str, int] = {}
                staged: dict[str, str] = {}
                for name, data in tables.items():
                    counts[name] = _stage(con, name, [data] if isinstance(data, pd.DataFrame) else data)
                    staged[name] = name + STAGING_SUFFIX
                if validate is not None:
                    validate(con, staged)
                exported = {name: self._export(con, name, work) for name in tables}
            finally:
                close(con)
            if not exported:
                return counts
            self._upload(exported, work)
            self._commit(exported)
            try:  # what was uploaded is what a read would download: keep it (a cache: failing here is harmless)
                for entry in exported.values():
                    for part in entry["parts"]:
                        target = self._cache_path(part["key"])
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(work / part["key"], target)
            except OSError:
                pass
            return counts
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _export(self, con: duckdb.DuckDBPyConnection, name: str, work: Path) -> dict:
        staging = _ident(name + STAGING_SUFFIX)
        rows = int(con.execute(f"SELECT count(*) FROM {staging}").fetchall()[0][0])
        schema = [[r[0], r[1]] for r in con.execute(f"DESCRIBE {staging}").fetchall()]
        version = uuid.uuid4().hex
        folder = f"{TABLES}/{name}/{version}"
        (work / folder).mkdir(parents=True)
        parts, start, per_part = [], 0, self.part_rows
        while start < rows or not parts:  # an empty table still gets one part: it carries the schema
            relative = f"{folder}/part-{len(parts):05d}.parquet"
            con.execute(f"COPY (SELECT * FROM {staging} WHERE rowid >= {start} AND rowid < {start + per_part} "
                        f"ORDER BY rowid) TO {_sql_str(str(work / relative))} (FORMAT parquet)")
            size = (work / relative).stat().st_size
            got = min(per_part, rows - start)
            parts.append({"key": relative, "rows": got, "bytes": size})
            start += per_part
            if got > 0:
                per_part = max(1, int(self.part_bytes * got / size))
        if sum(p["rows"] for p in parts) != rows:  # rowid is dense in a staging table; never publish a gap
            raise TableWriteError(f"table {name!r}: exported {sum(p['rows'] for p in parts)} of {rows} rows")
        return {"version": version, "rows": rows, "schema": schema, "parts": parts,
                "written_at": datetime.now(UTC).isoformat()}

    def _upload(self, exported: Mapping[str, dict], work: Path) -> None:
        def put(part: dict) -> None:
            with open(work / part["key"], "rb") as fh:
                self._call("write", self.client.put_object, Key=self._key(part["key"]), Body=fh)

        parts = [part for entry in exported.values() for part in entry["parts"]]
        with ThreadPoolExecutor(max_workers=min(4, len(parts))) as pool:
            list(pool.map(put, parts))

    def _commit(self, entries: Mapping[str, dict]) -> Manifest:
        deadline = time.monotonic() + self.commit_timeout_s
        rng = random.Random()
        attempts = 0
        writer = {"host": socket.gethostname(), "pid": os.getpid()}
        while True:
            attempts += 1
            base = self.newest_manifest()
            manifest = Manifest(
                sequence=(base.sequence if base else 0) + 1, id=uuid.uuid4().hex, parent=base.id if base else None,
                created_at=datetime.now(UTC).isoformat(), tables={**(base.tables if base else {}), **entries},
                changed=sorted(entries), writer=writer)
            try:
                self._call("commit", self.client.put_object, Key=self._manifest_key(manifest.sequence),
                           Body=manifest.to_json(), IfNoneMatch="*", ContentType="application/json")
                won = self._confirm(manifest)
            except Exception as exc:
                if _error_code(exc) not in _CONFLICT_CODES and _http_status(exc) not in (409, 412):
                    raise
                won = False
            if won:
                self._hint, self._cached = max(self._hint, manifest.sequence), manifest
                return manifest
            if time.monotonic() > deadline:
                raise WarehouseConflictError(
                    f"could not publish {sorted(entries)} to warehouse {self.url} in {self.commit_timeout_s:.0f} s "
                    f"({attempts} attempts, other writers committed first); no table changed and the uploaded "
                    "versions are unreferenced (vacuum removes them)")
            time.sleep(rng.uniform(0, min(0.5, 0.005 * 2 ** min(attempts, 7))))

    def _confirm(self, manifest: Manifest) -> bool:
        """True when ``manifest`` is in the chain: stored as written, and the next manifest (if any) follows it."""
        try:
            if self._get_manifest(manifest.sequence).id != manifest.id:
                return False  # a non-atomic conditional create let another writer overwrite it
        except _Missing:
            return False
        newer = self._first_manifest_after(manifest.sequence)
        if newer is None:
            return True
        if newer != manifest.sequence + 1:
            return False  # we re-created a vacuumed number below the newest: not in the chain
        try:
            return self._get_manifest(newer).parent == manifest.id
        except _Missing:
            return False

    def _first_manifest_after(self, sequence: int) -> int | None:
        page = self._call("list", self.client.list_objects_v2, Prefix=self._key(MANIFESTS) + "/",
                          StartAfter=self._manifest_key(sequence), MaxKeys=10)
        for obj in page.get("Contents", []):
            m = _MANIFEST_NAME.match(obj["Key"].rsplit("/", 1)[-1])
            if m:
                return int(m.group(1))
        return None

    # ---- garbage collection
    def vacuum(self, *, older_than: timedelta = timedelta(hours=24), keep_manifests: int = 100) -> VacuumReport:
        """Delete what no reader or writer can still need (see the module docstring); returns what it did.

        Keeps the newest ``keep_manifests`` manifests and every manifest that was the newest within
        ``older_than``, every version those reference, and every unreferenced version written within
        ``older_than`` (a writer may be about to publish it). Also prunes this machine's part cache and
        staging folders left by killed writers."""
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        if keep_manifests < 1:
            raise ValueError(f"keep_manifests must be at least 1 (the newest), got {keep_manifests}")
        cutoff = datetime.now(UTC) - older_than
        report = VacuumReport()
        listed = self._manifest_objects()
        keep: set[int] = {seq for seq, _ in listed[-keep_manifests:]}
        for (seq, _), (_, successor) in zip(listed, listed[1:], strict=False):
            if successor["LastModified"] >= cutoff:  # ``seq`` was the newest until recently: readers may use it
                keep.add(seq)
        referenced: set[str] = set()
        for seq in sorted(keep):
            try:
                manifest = self._get_manifest(seq)
            except _Missing:
                continue
            referenced.update(f"{TABLES}/{name}/{entry['version']}" for name, entry in manifest.tables.items())
        versions: dict[str, list[dict]] = {}
        for obj in self._list(TABLES):
            relative = obj["Key"][len(self._key("")):] if self.prefix else obj["Key"]
            parts = relative.split("/")
            if len(parts) >= 4:  # tables/<name>/<version>/<file>; anything else is not ours to delete
                versions.setdefault("/".join(parts[:3]), []).append(obj)
        doomed: list[dict] = []
        for folder, objects in versions.items():
            if folder in referenced or max(o["LastModified"] for o in objects) >= cutoff:
                report.versions_kept += 1
                continue
            report.versions_deleted += 1
            report.bytes_deleted += sum(int(o.get("Size", 0)) for o in objects)
            doomed.extend(objects)
        report.objects_deleted = len(doomed)
        doomed_manifests = [obj for seq, obj in listed if seq not in keep]
        report.manifests_deleted = len(doomed_manifests)
        keys = [o["Key"] for o in doomed] + [o["Key"] for o in doomed_manifests]
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            result = self._call("vacuum", self.client.delete_objects, Delete=batch)
            if result.get("Errors"):
                raise RuntimeError(f"vacuum of {self.url} could not delete {len(result['Errors'])} objects, "
                                   f"first: {result['Errors'][0]}")
        report.cache_versions_deleted = self._prune_cache(referenced, cutoff)
        return report

    def _prune_cache(self, referenced: set[str], cutoff: datetime) -> int:
        deleted = 0
        root = self._cache_path(TABLES)
        for folder in root.glob("*/*") if root.exists() else []:
            if f"{TABLES}/{folder.parent.name}/{folder.name}" not in referenced:
                shutil.rmtree(folder, ignore_errors=True)
                deleted += 1
        staging = self.cache_dir / "_staging"
        for folder in staging.glob("replace-*") if staging.exists() else []:
            if datetime.fromtimestamp(folder.stat().st_mtime, UTC) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        return deleted


_WAREHOUSES: dict[tuple, ObjectStoreWarehouse] = {}
_WAREHOUSES_LOCK = threading.Lock()


def object_store_warehouse(url: str, *, cache_dir: str | os.PathLike | None = None) -> ObjectStoreWarehouse:
    """The process-wide :class:`ObjectStoreWarehouse` for ``url`` (one per endpoint and cache folder), so the
    newest-manifest hint and the part cache carry over between uses."""
    key = (url.rstrip("/"), str(cache_dir), _env_identity()[0])
    with _WAREHOUSES_LOCK:
        store = _WAREHOUSES.get(key)
        if store is None:
            store = _WAREHOUSES[key] = ObjectStoreWarehouse(url, cache_dir=cache_dir)
        return store
