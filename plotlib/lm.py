"""Hugging Face causal LMs as backbones for residual-stream interchange interventions.

Layer ``"emb"`` is the residual stream entering decoder layer 0 (as the model computes it: GPT-2's
position embeddings and Gemma's embedding scale included); ``"L{i}"`` is the output of decoder layer i
(1-based, before the final norm). A location id is ``"layer@position"`` with a named token position
of :class:`LMInputs`, e.g. ``"L2@last"``. A position may name several tokens per row (a span such as
every choice of a multiple-choice prompt); its activation is their residuals concatenated, token by token.

Suffix-only patching (:meth:`CausalLMBackbone.resume`) is generic: it runs the model's own forward
while the decoder layers up to the resumed one are swapped for pass-through stubs, the last stub
returning the cached (patched) stream; for ``"emb"`` a forward pre-hook on layer 0 swaps its input.
Everything model specific (masks, rotary or learned positions, final norm, soft-capping) is thus left
to the model itself. A forward pre-hook on the LM head keeps only the hidden state at each row's
``"last"`` position, so the logits are ``(n, 1, vocab)`` rather than ``(n, T, vocab)``.

Prefix reuse (:meth:`CausalLMBackbone.resume_context`): a patch at token p leaves the tokens before p
unchanged, so their keys and values at the later layers are computed once per bank and location and
handed to the model as its own cache; resume then runs only the tokens from p on.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
)

from plotlib.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class LMInputs:
    """A batch of tokenized prompts: right-padded ids, their mask, named token positions per row (``(n,)``
    for one token, ``(n, m)`` for a span of m tokens), and (optionally) cached residual streams of these
    same prompts per layer name, and prefix contexts per location id (see
    :meth:`CausalLMBackbone.resume_context`), for resuming."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: dict[str, torch.Tensor]
    streams: dict[str, torch.Tensor] = field(default_factory=dict)
    contexts: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check shapes early, since a wrong position silently reads the wrong token."""
        if self.input_ids.dim() != 2 or self.attention_mask.shape != self.input_ids.shape:
            raise ValueError(f"input_ids and attention_mask must both be (n, T); got {tuple(self.input_ids.shape)} "
                             f"and {tuple(self.attention_mask.shape)}")
        if "last" not in self.positions:
            raise ValueError(f"positions must contain 'last'; got {sorted(self.positions)}")
        n = len(self)
        for name, t in {**self.positions, **self.streams, **self.contexts}.items():
            if t.shape[0] != n:
                raise ValueError(f"{name!r} has {t.shape[0]} rows, expected {n}")
        for name, t in self.positions.items():
            if t.dim() not in (1, 2) or (name == "last" and t.dim() != 1):
                raise ValueError(f"position {name!r} must be (n,) or (n, m) token indices ('last' a single token); "
                                 f"got shape {tuple(t.shape)}")

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def _map(self, fn) -> LMInputs:
        """Apply ``fn`` to every tensor field (rows first), keeping the names."""
        return LMInputs(fn(self.input_ids), fn(self.attention_mask), {k: fn(v) for k, v in self.positions.items()},
                        {k: fn(v) for k, v in self.streams.items()}, {k: fn(v) for k, v in self.contexts.items()})

    def __getitem__(self, idx) -> LMInputs:
        """Rows ``idx`` (LongTensor, list, bool mask or slice; an int gives a one-row batch) of every field."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return self._map(lambda t: t[idx])

    def repeat_rows(self, k: int) -> LMInputs:
        """The batch tiled k times, in the row order of ``tensor.repeat(k, 1)``."""
        return self._map(lambda t: t.repeat(k, *[1] * (t.dim() - 1)))

    def with_streams(self, streams: dict[str, torch.Tensor]) -> LMInputs:
        """A copy carrying these cached streams too (same-named ones replaced)."""
        return replace(self, streams={**self.streams, **streams})

    def keep(self, layer: str) -> LMInputs:
        """A copy carrying only the stream of ``layer`` and the contexts of its locations: what patching
        there needs, so batches tiled or indexed for it copy one stream, not every cached layer's."""
        return replace(self, streams={k: v for k, v in self.streams.items() if k == layer},
                       contexts={k: v for k, v in self.contexts.items() if k.partition("@")[0] == layer})

    def to(self, device) -> LMInputs:
        """Every tensor moved to ``device``."""
        return self._map(lambda t: t.to(device))


def read_position(stream: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """The residual ``(n, d)`` at one token per row, or ``(n, m * d)`` (tokens concatenated) at a span."""
    rows = torch.arange(stream.shape[0], device=stream.device)
    position = position.to(stream.device)
    if position.dim() == 1:
        return stream[rows, position]
    return stream[rows[:, None], position].reshape(stream.shape[0], -1)


def write_position(stream: torch.Tensor, position: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """A copy of ``stream`` with :func:`read_position`'s tokens set to ``h`` (differentiable in ``h``)."""
    rows = torch.arange(stream.shape[0], device=stream.device)
    position = position.to(stream.device)
    h = h.to(stream.device, stream.dtype)
    if position.dim() == 1:
        return stream.index_put((rows, position), h)
    return stream.index_put((rows[:, None], position), h.reshape(*position.shape, stream.shape[-1]))


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of decoder layers: the one whose length is the config's layer count, preferring a
    direct child of ``model.base_model``, so no per-architecture attribute names are needed."""
    n = model.config.get_text_config().num_hidden_layers
    base = getattr(model, "base_model", model)
    for scope in (base.named_children(), base.named_modules(), model.named_modules()):
        found = {id(m): m for _, m in scope if isinstance(m, nn.ModuleList) and len(m) == n}
        if len(found) == 1:
            return next(iter(found.values()))
        if len(found) > 1:
            raise ValueError(f"{type(model).__name__}: {len(found)} ModuleLists of length {n}; cannot tell which "
                             f"holds the decoder layers")
    raise ValueError(f"{type(model).__name__}: no ModuleList of length num_hidden_layers={n} found")


def _hidden_states(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden_states argument of a decoder layer call (positional in GPT-2/Llama-style models)."""
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden_states(args: tuple, kwargs: dict, value: torch.Tensor) -> tuple[tuple, dict]:
    """A decoder layer's call arguments with hidden_states replaced by ``value`` (for a pre-hook)."""
    return ((value, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": value})


def _output(out) -> torch.Tensor:
    """The hidden_states a decoder layer returned (a tensor in transformers 5; element 0 of older tuples)."""
    return out[0] if isinstance(out, tuple) else out


class _Skip(nn.Module):
    """Stand-in for a skipped decoder layer: returns ``out`` if set, else its input, at no cost.
    Unknown attributes (e.g. ``attention_type``, read by some model loops) come from the original layer."""

    def __init__(self, layer: nn.Module, out: torch.Tensor | None) -> None:
        super().__init__()
        self.__dict__["_layer"] = layer  # not registered as a submodule
        self.out = out

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return _hidden_states(args, kwargs) if self.out is None else self.out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_layer"], name)


class CausalLMBackbone(nn.Module):
    """A causal LM read out as logits over answer tokens at the last prompt token, with residual-stream
    capture and suffix-only resumption for interchange interventions."""

    kind = "hf_causal_lm"
    #: the most stacked prompts per patched forward (each row is a whole (T, d) stream, unlike a vector tap)
    max_batch_rows = 4096
    #: by default a forward holds at most this many values per (rows, T, d) tensor (128 MB in float32): the small
    #: models trained here keep max_batch_rows, a wide model's forwards are split; None: always max_batch_rows
    stream_values: int | None = 2 ** 25

    def __init__(self, model: nn.Module, answer_token_ids: Sequence[int], spans: dict[str, int] | None = None) -> None:
        """``spans``: the token count of each position that names several tokens (one otherwise)."""
        super().__init__()
        self.model = model
        self.layers = find_decoder_layers(model)
        self.spans = dict(spans or {})
        self.register_buffer("answer_ids", torch.as_tensor(list(answer_token_ids), dtype=torch.long), persistent=False)

    def rows_for(self, x: LMInputs) -> int:
        """Stacked prompts per forward for inputs like ``x``: max_batch_rows, fewer where their streams are
        large (see stream_values; the spec's batching.rows fixes it instead)."""
        if self.stream_values is None:
            return self.max_batch_rows
        per_row = x.input_ids.shape[1] * self.model.config.get_text_config().hidden_size
        return max(1, min(self.max_batch_rows, self.stream_values // per_row))

    @property
    def layer_names(self) -> list[str]:
        """``"emb"``, ``"L1"`` .. ``"Ln"`` in network order."""
        return layer_names_for(len(self.layers))

    def _index(self, layer: str) -> int:
        """How many decoder layers precede stream ``layer`` (0 for ``"emb"``)."""
        names = self.layer_names
        if layer not in names:
            raise KeyError(f"unknown layer {layer!r} of {type(self.model).__name__}; layers are {names[0]}..{names[-1]}")
        return names.index(layer)

    def width(self, name: str) -> int:
        """The width of a layer name's residual, or of a location id ``"layer@position"`` (times the
        position's token count)."""
        layer, _, position = name.partition("@")
        self._index(layer)
        return self.model.config.get_text_config().hidden_size * self.spans.get(position, 1)

    @property
    def _device(self) -> torch.device:
        """Where the model (its first parameter) lives; inputs and streams are moved there."""
        return next(self.model.parameters()).device

    def _to_model(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the model's device and in its dtype (cached streams and contexts are float32 on CPU)."""
        p = next(self.model.parameters())
        return t.to(p.device, p.dtype)

    @contextmanager
    def _resumed_at(self, skip: int, stream: torch.Tensor | None) -> Iterator[None]:
        """While inside: the first ``skip`` decoder layers are pass-through stubs, the last of them returning
        ``stream`` (moved to the model's device and dtype); for ``skip`` 0, a pre-hook gives layer 0
        ``stream`` as its input instead."""
        saved = list(self.layers[:skip])
        hook = None
        if stream is not None:
            stream = self._to_model(stream)
        try:
            if stream is not None and skip == 0:
                hook = self.layers[0].register_forward_pre_hook(
                    lambda _, args, kwargs: _with_hidden_states(args, kwargs, stream), with_kwargs=True)
            for j, layer in enumerate(saved):
                self.layers[j] = _Skip(layer, stream if j == skip - 1 else None)
            yield
        finally:
            if hook is not None:
                hook.remove()
            for j, layer in enumerate(saved):
                self.layers[j] = layer

    def _readout(self, x: LMInputs, skip: int = 0, stream: torch.Tensor | None = None,
                 context: torch.Tensor | None = None) -> torch.Tensor:
        """The model's own forward, with the first ``skip`` decoder layers stubbed out and ``stream`` (if
        given) as the residual stream after them; float32 answer logits at ``"last"``. With ``context``
        (see :meth:`resume_context`) only the tokens after its prefix run, attending to its keys and values."""
        x = x.to(self._device)
        rows = torch.arange(len(x), device=self._device)
        ids, last, cache = x.input_ids, x.positions["last"], None
        if context is not None:
            start = context.shape[-2]
            ids, last, stream, cache = ids[:, start:], last - start, stream[:, start:], self._prefix_cache(context, skip)
        head = self.model.get_output_embeddings().register_forward_pre_hook(
            lambda _, args: (args[0][rows, last].unsqueeze(1), *args[1:]))
        try:
            with self._resumed_at(skip, stream):
                logits = self.model(input_ids=ids, attention_mask=x.attention_mask, past_key_values=cache,
                                    use_cache=cache is not None).logits
        finally:
            head.remove()
        return logits[:, -1, self.answer_ids].float()

    def _prefix_cache(self, context: torch.Tensor, skip: int):
        """A model cache of ``context``'s keys and values for the layers after ``skip``. The stubbed layers
        before get copies of the first (never read: the model sizes its mask and positions from them)."""
        from transformers import DynamicCache

        context = self._to_model(context)
        cache = DynamicCache(config=self.model.config)
        for j in range(len(self.layers)):
            kv = context[:, max(j - skip, 0)]
            cache.update(kv[:, 0], kv[:, 1], j)
        return cache

    @torch.no_grad()
    def _prefix_context(self, x: LMInputs, layer: str, start: int) -> torch.Tensor:
        """Keys and values ``(n, layers after, 2, heads, start, head_dim)`` of ``x``'s first ``start`` tokens at
        the decoder layers after ``layer``, run from the cached stream there."""
        x = x.to(self._device)
        skip = self._index(layer)
        with self._resumed_at(skip, x.streams[layer][:, :start]):
            cache = self.model.get_decoder()(input_ids=x.input_ids[:, :start], attention_mask=x.attention_mask[:, :start],
                                             use_cache=True).past_key_values
        return torch.stack([torch.stack([cache.layers[j].keys, cache.layers[j].values], 1)
                            for j in range(skip, len(self.layers))], 1)

    def resume_context(self, location: str, x: LMInputs, batch_size: int = 256) -> LMInputs:
        """``x`` plus, for ``location``, the keys and values of the tokens before its first position at every
        later decoder layer. A patch there leaves those tokens unchanged, so :meth:`resume` then runs only
        the tokens from that position on (for ``"last"``, one token instead of the whole prompt).

        ``x`` comes back unchanged where this saves nothing (the last layer, a position at the first token)
        or where the model's cache does not reproduce its full forward: checked once here on a few rows,
        with a warning, so an architecture whose cache behaves otherwise stays correct, only slower."""
        layer, _, position = location.partition("@")
        skip = self._index(layer)
        if location in x.contexts or skip == len(self.layers) or layer not in x.streams or position not in x.positions:
            return x
        start = int(x.positions[position].min())
        if start == 0:
            return x
        stored = x.streams[layer].dtype  # the cache's storage dtype: contexts are as large as streams, so kept alike
        try:
            context = torch.cat([self._prefix_context(x[i:i + batch_size], layer, start).to("cpu", stored)
                                 for i in range(0, len(x), batch_size)])
            ready = replace(x, contexts={**x.contexts, location: context})
            rows = torch.arange(min(len(x), 8))
            donor = x[rows.roll(1)]  # another row's activation, so the check writes a real patch
            with torch.no_grad():
                h = read_position(donor.streams[layer], donor.positions[position])
                full, fast = self.resume(location, h, x[rows]), self.resume(location, h, ready[rows])
            error = float((full - fast).abs().max())
        except (AttributeError, TypeError, ValueError, RuntimeError, IndexError) as err:
            log.warning("%s: no prefix reuse at %s (%s: %s); every token runs", type(self.model).__name__, location,
                        type(err).__name__, err)
            return x
        # a half-precision cache rounds the keys and values the model would compute: allow for its precision
        if error > max(1e-3, 8 * torch.finfo(stored).eps) * float(full.abs().max()) + 1e-4:
            log.warning("%s: prefix reuse at %s changes the logits by %.3g; every token runs", type(self.model).__name__,
                        location, error)
            return x
        return ready

    def forward(self, x: LMInputs) -> torch.Tensor:
        """Float32 logits ``(n, n_answers)`` of the answer tokens at each row's ``"last"`` position."""
        return self._readout(x)

    @torch.no_grad()
    def capture(self, x: LMInputs, layers: Iterable[str], batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Full residual streams ``(n, T, d)`` of ``layers`` (model dtype, on the model's device) and the
        readout as ``"logits"``, from one plain forward per batch."""
        layers = list(dict.fromkeys(layers))
        got: dict[str, list[torch.Tensor]] = {name: [] for name in [*layers, "logits"]}
        hooks = []
        try:
            for name in layers:
                i = self._index(name)
                if i == 0:
                    hooks.append(self.layers[0].register_forward_pre_hook(
                        lambda _, args, kwargs: got["emb"].append(_hidden_states(args, kwargs)), with_kwargs=True))
                else:
                    hooks.append(self.layers[i - 1].register_forward_hook(
                        lambda _, __, out, name=name: got[name].append(_output(out))))
            for start in range(0, len(x), batch_size):
                got["logits"].append(self.forward(x[start:start + batch_size]))
        finally:
            for hook in hooks:
                hook.remove()
        return {name: torch.cat(parts) for name, parts in got.items()}

    def resume_stream(self, layer: str, stream: torch.Tensor, x: LMInputs) -> torch.Tensor:
        """The readout when the residual stream at ``layer`` is replaced by ``stream`` ``(n, T, d)``, running
        only the decoder layers after ``layer`` (plus the final norm and LM head)."""
        return self._readout(x, self._index(layer), stream)

    def resume(self, location: str, h: torch.Tensor, x: LMInputs) -> torch.Tensor:
        """The readout after writing ``h`` (``(n, width)``, see :func:`read_position`) into ``x``'s cached
        stream at location ``"layer@position"``; differentiable in ``h`` (the model may stay frozen)."""
        layer, _, position = location.partition("@")
        if layer not in x.streams:
            raise KeyError(f"resume at {location!r} needs the cached stream {layer!r}; x has {sorted(x.streams)} "
                           f"(use x.with_streams(backbone.capture(x, [{layer!r}])))")
        if position not in x.positions:
            raise KeyError(f"unknown position {position!r} in {location!r}; positions are {sorted(x.positions)}")
        patched = write_position(self._to_model(x.streams[layer]), x.positions[position], h)
        return self._readout(x, self._index(layer), patched, x.contexts.get(location))


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def layer_names_for(depth: int) -> list[str]:
    """The stream names of a model with ``depth`` decoder layers: ``"emb"``, ``"L1"`` .. ``"L<depth>"``."""
    return ["emb", *(f"L{i}" for i in range(1, depth + 1))]


def _locate(name_or_path: str) -> tuple[str, bool]:
    """(path to load from, whether it is a local directory). Hub ids are ``name`` or ``org/name``;
    anything else that looks like a path must exist."""
    path = os.path.expanduser(name_or_path)
    local = os.path.isdir(path)
    hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name_or_path) and not name_or_path.startswith(".")
    if not local and not hub_id:
        raise FileNotFoundError(f"model path {name_or_path!r} is not an existing directory")
    return path, local


def load_config(name_or_path: str):
    """The model's config only (layer count, width), with the errors of :func:`load_causal_lm`."""
    path, local = _locate(name_or_path)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=local)
    except OSError as e:
        if local:
            raise
        raise OSError(f"could not fetch {name_or_path!r} from the Hugging Face hub (hub unreachable or wrong name, "
                      f"and no such local directory); give a local path to a saved model instead ({e})") from e


def load_tokenizer(name_or_path: str):
    """The model's tokenizer, right-padded, with a pad token (the eos token if it has none)."""
    path, local = _locate(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def load_causal_lm(name_or_path: str, dtype: str = "float32", device: str = "auto"):
    """Load an AutoModelForCausalLM and its AutoTokenizer by hub name or local path -> (model, tokenizer)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}; got {dtype!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path, local = _locate(name_or_path)
    config = load_config(name_or_path)
    causal_names = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    saved = getattr(config, "architectures", None) or []
    if (type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING or getattr(config, "is_encoder_decoder", False)
            or (saved and not causal_names.intersection(saved))):
        raise ValueError(f"{name_or_path} is not a causal language model (config class {type(config).__name__}, "
                         f"saved architectures {saved})")
    model = AutoModelForCausalLM.from_pretrained(path, config=config, dtype=_DTYPES[dtype], local_files_only=local)
    model = model.to(device).eval().requires_grad_(False)
    return model, load_tokenizer(name_or_path)


def save_lm_backbone(backbone: CausalLMBackbone, path: str, pretrained: dict | None, tokenizer) -> None:
    """Write ``path``: a small record of how to load the backbone. A pretrained model is referenced
    (``pretrained``: the spec's backbone section); a model trained here is saved beside the record with
    its tokenizer (``save_pretrained``, safetensors) in ``<path>.hf/``. Both writes are atomic."""
    record = {"kind": CausalLMBackbone.kind, "answer_ids": backbone.answer_ids.tolist()}
    if pretrained:
        record.update(model=pretrained["pretrained"], dtype=pretrained.get("dtype", "float32"), device=pretrained.get("device", "auto"))
    else:
        directory = Path(f"{path}.hf")
        tmp = directory.with_name(directory.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        backbone.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
        record.update(model=directory.name, dtype="float32", device="cpu")
    with atomic_path(path) as tmp_file:
        torch.save(record, tmp_file)


def load_lm_backbone(path: str, spans: dict[str, int] | None = None) -> CausalLMBackbone:
    """Load what :func:`save_lm_backbone` wrote: frozen, in eval mode (``spans`` as for the backbone)."""
    if not Path(path).exists():
        raise FileNotFoundError(f"backbone record not found: {path}")
    record = torch.load(path, map_location="cpu", weights_only=True)
    if record.get("kind") != CausalLMBackbone.kind:
        raise ValueError(f"{path} is not a causal-LM backbone record (kind {record.get('kind')!r})")
    model_ref = record["model"]
    local = Path(path).parent / model_ref
    model, _ = load_causal_lm(str(local) if local.is_dir() else model_ref, record["dtype"], record["device"])
    return CausalLMBackbone(model, record["answer_ids"], spans).eval()
