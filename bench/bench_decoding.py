"""Benchmark: trie-constrained beam search vs transformers' generate(prefix_allowed_tokens_fn=...).

Same ~2M-parameter T5, same inputs, same trie; prints users/s, the speed-up and the top-10 agreement, then
the trie build time for a Scientific-sized (4,385) and a 100,000-item catalogue.

    .venv/bin/python bench/bench_decoding.py [--items 4385 --batch 64 --beam 20 --batches 3 --threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import T5Config, T5ForConditionalGeneration  # noqa: E402

from training.constrained_decoding import constrained_beam_search, prefix_allowed_tokens_fn  # noqa: E402
from training.sid_trie import SidTrie  # noqa: E402
from training.sid_vocab import EOS_ID, PAD_ID, SidVocab  # noqa: E402

LEVELS, CODEBOOK = 3, 256


def random_catalogue(n_items: int, seed: int, collision_rate: float = 0.03) -> SidVocab:
    """Random 3×256 codes; a share of items copies another item's codes, so suffix tokens are needed."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, CODEBOOK, size=(n_items, LEVELS))
    copies = rng.choice(n_items, size=int(collision_rate * n_items), replace=False)
    codes[copies] = codes[rng.integers(0, n_items, size=len(copies))]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, row in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(row, []).append(i)
    suffix = np.full(n_items, -1)
    for members in groups.values():
        if len(members) > 1:
            suffix[members] = np.arange(len(members))
    return SidVocab([f"item{i}" for i in range(n_items)], codes, suffix, level_sizes=[CODEBOOK] * LEVELS)


def small_t5(vocab_size: int, seed: int) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size, d_model=128, d_ff=512, num_layers=4, num_decoder_layers=4, num_heads=4, d_kv=32,
        decoder_start_token_id=PAD_ID, pad_token_id=PAD_ID, eos_token_id=EOS_ID,
    )
    return T5ForConditionalGeneration(config).eval()


def user_histories(vocab: SidVocab, n_users: int, history: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's input: the level codes of ``history`` random items, back to back."""
    rng = np.random.default_rng(seed)
    items = rng.integers(0, vocab.n_items, size=(n_users, history))
    codes = vocab.sid_tokens[:, :LEVELS][items].reshape(n_users, history * LEVELS)
    input_ids = torch.from_numpy(codes.copy())
    return input_ids, torch.ones_like(input_ids)


def run_ours(model, batches, trie, vocab, beam: int, top_k: int):
    return [constrained_beam_search(model, x, m, trie, vocab, beam_width=beam, top_k=top_k) for x, m in batches]


def run_hf(model, batches, trie, vocab, beam: int, top_k: int):
    allowed = prefix_allowed_tokens_fn(trie)
    results = []
    with torch.inference_mode():
        for x, m in batches:
            out = model.generate(
                input_ids=x, attention_mask=m, num_beams=beam, num_return_sequences=top_k,
                max_new_tokens=trie.max_len, length_penalty=0.0, do_sample=False,
                prefix_allowed_tokens_fn=allowed, return_dict_in_generate=True, output_scores=True,
            )
            results.append((out.sequences.view(len(x), top_k, -1), out.sequences_scores.view(len(x), top_k)))
    return results


def timed(fn, *args):
    """Result, wall seconds and this process's CPU seconds (steadier on a shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=4385)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--history", type=int, default=20)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    vocab = random_catalogue(args.items, args.seed)
    trie = SidTrie.from_vocab(vocab)
    model = small_t5(vocab.vocab_size, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"catalogue: {vocab}, {int((vocab.sid_tokens[:, LEVELS] != EOS_ID).sum())} suffixed items; {trie}")
    print(f"model: T5 with {n_params / 1e6:.2f}M parameters; threads={args.threads}; "
          f"batch={args.batch}, beam={args.beam}, top-{args.top_k}")

    batches = [user_histories(vocab, args.batch, args.history, args.seed + 1 + b) for b in range(args.batches)]
    warm = [(x[:4], m[:4]) for x, m in batches[:1]]
    run_ours(model, warm, trie, vocab, args.beam, args.top_k)
    run_hf(model, warm, trie, vocab, args.beam, args.top_k)

    ours, wall_ours, cpu_ours = timed(run_ours, model, batches, trie, vocab, args.beam, args.top_k)
    ref, wall_ref, cpu_ref = timed(run_hf, model, batches, trie, vocab, args.beam, args.top_k)
    users = args.batch * args.batches
    same_list = same_set = 0
    max_diff = 0.0
    for result, (sequences, scores) in zip(ours, ref, strict=True):
        items = [[vocab.item_of_tokens(seq[1:]) for seq in row] for row in sequences]  # drop decoder start
        for row, hf_row in zip(result.item_ids(vocab), items, strict=True):
            same_list += row == hf_row
            same_set += set(row) == set(hf_row)
        max_diff = max(max_diff, float((result.scores - scores).abs().max()))

    print()
    print(f"{'method':<42} {'users/s wall':>13} {'users/s CPU':>12} {'s/batch wall':>13}")
    for name, wall, cpu in (
        ("constrained_beam_search (tensor trie)", wall_ours, cpu_ours),
        ("generate(prefix_allowed_tokens_fn=...)", wall_ref, cpu_ref),
    ):
        print(f"{name:<42} {users / wall:>13.1f} {users / cpu:>12.1f} {wall / args.batches:>13.3f}")
    print(f"speed-up: {wall_ref / wall_ours:.1f}x wall-clock, {cpu_ref / cpu_ours:.1f}x CPU time")
    print(f"top-{args.top_k} agreement over {users} users: identical ranked lists {100 * same_list / users:.1f}%, "
          f"identical sets {100 * same_set / users:.1f}%, max |score diff| {max_diff:.2e}")

    print()
    print(f"{'trie build':<20} {'items':>8} {'nodes':>9} {'codes+vocab (s)':>16} {'trie (s)':>9}")
    for n_items in (4385, 100_000):
        catalogue, t_vocab, _ = timed(random_catalogue, n_items, args.seed)
        built, t_trie, _ = timed(SidTrie.from_vocab, catalogue)
        print(f"{'':<20} {n_items:>8} {built.n_nodes:>9} {t_vocab:>16.3f} {t_trie:>9.3f}")


if __name__ == "__main__":
    main()
