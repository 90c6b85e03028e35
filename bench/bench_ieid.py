"""Benchmark of interest-enhanced item discretisation (IEID) on the real Amazon "Scientific" items.

Prints: MiniLM embedding throughput at batch 32/64/128 (and the ratio to batch 32), RQ-VAE training
time (default config, 3 x 256), per-level usage and entropy, the collision rate before the suffix and
the largest collision group, for the item text alone and for the text plus interests.

Until mined interests exist, "with interests" uses a deterministic STAND-IN (two phrases picked by a hash
of the item id from a fixed list): it shows the wiring and the cost, not the method's effect. The real
with/without comparison is wired later from the `item_interests` asset.

    python bench/bench_ieid.py [--data /work/shared/data/amazon-scientific] [--limit N] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from encoders.text_encoder import TextEncoder  # noqa: E402
from training.codebook_health import table_health  # noqa: E402
from training.item_text import build_item_text  # noqa: E402
from training.rqvae import RQVAEConfig, train_rqvae  # noqa: E402
from training.semantic_ids import SemanticIdTable  # noqa: E402

STAND_IN_INTERESTS = [
    "equipping a home workshop", "repairing household fixtures", "school science projects",
    "laboratory sample preparation", "precision metalworking", "woodworking hobby builds",
    "3D printing and prototyping", "electronics repair", "workplace safety compliance",
    "outdoor equipment maintenance", "small business shipping and packing", "classroom demonstrations",
]


def read_scientific(data_dir: Path, limit: int | None) -> pd.DataFrame:
    """Items of ``Scientific.text``: item_id, text ("title. categories. brand.")."""
    path = data_dir / "Scientific.text"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (pass --data <folder with Scientific.text>)")
    frame = pd.read_csv(path, sep="\t", header=0, names=["item_id", "text"], dtype=str, quoting=3,
                        keep_default_na=False)
    return frame.head(limit) if limit else frame


def stand_in_interests(item_id: str, k: int = 2) -> list[str]:
    """Deterministic placeholder descriptors (NOT mined interests): k phrases chosen by a hash of the id."""
    digest = hashlib.sha256(item_id.encode()).digest()
    picks = []
    for byte in digest:
        phrase = STAND_IN_INTERESTS[byte % len(STAND_IN_INTERESTS)]
        if phrase not in picks:
            picks.append(phrase)
        if len(picks) == k:
            break
    return picks


def throughput(encoder: TextEncoder, texts: list[str], batch_size: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = encoder.encode(texts, batch_size=batch_size)
    return len(texts) / (time.perf_counter() - started), vectors


def discretise(name: str, vectors: np.ndarray, ids: list[str], config: RQVAEConfig, seed: int,
               threads: int) -> dict[str, object]:
    result = train_rqvae(vectors, replace(config, seed=seed), num_threads=threads)
    table = SemanticIdTable.from_codes(ids, result.codes, result.distances)
    health = table_health(table, result.config.codebook_size)
    history = result.loss_history
    return {
        "variant": name,
        "train_s": result.train_seconds,
        "epochs": len(history),
        "recon_first": history[0]["recon"],
        "recon_last": history[-1]["recon"],
        "health": health,
        "message": result.message,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "DIGR_SCIENTIFIC_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "amazon-scientific")))
    parser.add_argument("--limit", type=int, default=None, help="use only the first N items")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (shared machine: 1)")
    parser.add_argument("--epochs", type=int, default=None, help="RQ-VAE epochs (default: the config's)")
    parser.add_argument("--throughput-items", type=int, default=512,
                        help="items timed at each batch size (the full catalogue is embedded once per variant)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    items = read_scientific(args.data, args.limit)
    ids = items["item_id"].tolist()
    plain = [build_item_text(t, with_interests=False) for t in items["text"]]
    enriched = [build_item_text(t, descriptors=stand_in_interests(i)) for i, t in zip(ids, items["text"],
                                                                                        strict=True)]
    print(f"items: {len(items)} from {args.data}; torch threads: {args.threads}; "
          f"cores: {os.cpu_count()} (shared machine: absolute timings are noisy, ratios less so)")

    started = time.perf_counter()
    encoder = TextEncoder(batch_size=64)
    print(f"encoder: {encoder.model_name} (dim {encoder.dim}, max_length {encoder.max_length}) "
          f"loaded in {time.perf_counter() - started:.1f}s")

    encoder.encode(plain[:64])  # warm-up: first-call allocations are not throughput
    sample = plain[: args.throughput_items]
    print(f"\nEmbedding throughput, item text alone, first {len(sample)} items")
    print(f"{'batch':>6} {'items/s':>9} {'vs b32':>7}")
    base = 0.0
    for batch in (32, 64, 128):
        rate, _ = throughput(encoder, sample, batch)
        base = base or rate
        print(f"{batch:>6} {rate:>9.1f} {rate / base:>6.2f}x")
    rate_plain, vectors_plain = throughput(encoder, plain, 64)
    rate_enriched, vectors_enriched = throughput(encoder, enriched, 64)
    tokens = [len(encoder.tokenizer(t)["input_ids"]) for t in (plain[0], enriched[0])]
    print(f"full catalogue, batch 64: text only {rate_plain:.1f} items/s; text + stand-in interests "
          f"{rate_enriched:.1f} items/s ({rate_enriched / rate_plain:.2f}x; longer texts, e.g. {tokens[0]} vs "
          f"{tokens[1]} tokens for the first item)")

    config = RQVAEConfig() if args.epochs is None else RQVAEConfig(max_epochs=args.epochs)
    print(f"\nRQ-VAE {config.n_levels} levels x {config.codebook_size} codes, latent {config.latent_dim}, "
          f"hidden {config.hidden_dims}, batch {config.batch_size}, {config.max_epochs} epochs, seed {args.seed}")
    rows = [
        discretise("text only", vectors_plain, ids, config, args.seed, args.threads),
        discretise("text + STAND-IN interests", vectors_enriched, ids, config, args.seed, args.threads),
    ]
    header = (f"{'variant':<27} {'train s':>7} {'recon 1st→last':>16} {'usage per level':>20} "
              f"{'entropy/log K':>20} {'collide':>8} {'groups':>6} {'largest':>7} {'unique':>6}")
    print(header)
    print("-" * len(header))
    for row in rows:
        h = row["health"]
        usage = "/".join(f"{u:.2f}" for u in h.usage)
        entropy = "/".join(f"{e:.2f}" for e in h.entropy_normalised)
        recon = f"{row['recon_first']:.3f}→{row['recon_last']:.3f}"
        print(f"{row['variant']:<27} {row['train_s']:>7.1f} {recon:>16} {usage:>20} {entropy:>20} "
              f"{h.collision_rate:>8.2%} {h.n_collision_groups:>6} {h.largest_collision_group:>7} "
              f"{h.uniqueness_after_suffix:>6.2f}")
        if row["message"]:
            print(f"  note: {row['message']}")
    ratio = rows[1]["train_s"] / rows[0]["train_s"]
    print(f"\ntraining-time ratio (stand-in / text only): {ratio:.2f}x")
    print("NOTE: 'with interests' uses a deterministic stand-in, not mined interests; the real comparison is "
          "wired by the lead once item_interests exists.")


if __name__ == "__main__":
    main()
