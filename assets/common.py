"""Small helpers shared by asset modules: metadata conversion, lineage, content hashes."""

import hashlib

import dagster as dg
import numpy as np
import pandas as pd

from warehouse.catalogue import active_items, with_captions  # noqa: F401 - the asset modules' catalogue reads


def md(values: dict) -> dict:
    """Dagster metadata from plain values: dicts and lists as JSON, everything else as is."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dg.MetadataValue):
            out[key] = value
        elif isinstance(value, dict | list | tuple):
            out[key] = dg.MetadataValue.json(_plain(value))
        elif isinstance(value, np.generic):
            out[key] = value.item()
        else:
            out[key] = value
    return out


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def frame_hash(df: pd.DataFrame) -> str:
    """Content hash of a frame (row order and values), to prove two materialisations are identical."""
    hashed = pd.util.hash_pandas_object(df.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(df.columns).encode()).hexdigest()[:16]


def sha256_file(path) -> str:
    """SHA-256 of a file (checkpoints are recorded with it, so an altered one is refused, not loaded)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upstream_lineage(context: dg.AssetExecutionContext, *asset_names: str) -> dict:
    """Which materialisation of each upstream asset this run read: run id, timestamp and content hash."""
    out = {}
    for name in asset_names:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
        if event is None:
            out[name] = None
            continue
        mat = event.asset_materialization
        content = mat.metadata.get("content_hash") if mat else None
        out[name] = {
            "run_id": event.run_id,
            "timestamp": event.timestamp,
            "content_hash": content.value if content is not None else None,
        }
    return out


def preview(df: pd.DataFrame, n: int = 8) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(n).to_markdown(index=False))


def latest_metadata(context: dg.AssetExecutionContext, asset: str, *, required: bool = True) -> dict | None:
    """Plain values of the metadata of ``asset``'s latest materialisation (the lineage this run builds on);
    ``None`` when there is none and it is not ``required``."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        if not required:
            return None
        raise dg.Failure(f"{asset} has no materialisation; materialise it first")
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}
