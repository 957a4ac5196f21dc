"""llama.cpp as the inference engine of causal language models: one base in memory, LoRA adapters per call.

A :class:`LlamaBase` holds one GGUF base (``fleet.models.gguf_export``) and one llama.cpp context with
``slots`` parallel sequences. :meth:`LlamaBase.generate` answers a list of already tokenized prompts with
greedy decoding: up to ``slots`` prompts at a time share each forward pass (one token per sequence per
step), with the adapter the caller names applied to the whole context for that call (llama.cpp applies
adapters per context, so prompts of different adapters are answered in turn, each call batched).

Tokens go in and come out as ids: the caller tokenizes with the base's own (transformers) tokenizer, so
both engines see exactly the same prompt tokens. The context is not thread-safe: calls are serialised.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fleet.models.gguf_export import GgufError, read_digest
from fleet.models.prompt_prefix import common_prefix

_QUIET: list[Any] = []  # the log callback, kept alive as long as llama.cpp may call it
log = logging.getLogger("fleet.models.llama_engine")


def available() -> bool:
    """llama-cpp-python is installed (the ``gguf`` extra; it builds from source with cmake and a compiler)."""
    return importlib.util.find_spec("llama_cpp") is not None


def usable(engine: str) -> str:
    """The engine that can answer: ``engine``, or transformers where it is llama-cpp and llama-cpp-python is
    not installed (a classifier-only install, or a laptop without a compiler)."""
    return "transformers" if engine == "llama-cpp" and not available() else engine


def _quiet_llama() -> None:
    """Route llama.cpp's own log (model loading chatter) to warnings and errors only."""
    if _QUIET:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def _callback(level: int, text: bytes, _: ctypes.c_void_p) -> None:
        if level in (3, 4):  # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continued
            log.log(logging.WARNING if level == 3 else logging.ERROR, text.decode("utf-8", "replace").rstrip())

    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    _QUIET.append(_callback)


@dataclass
class _Seq:
    row: int
    prompt: list[int]
    out: list[int]
    pos: int = 0
    logprob: float = 0.0  # the sum of the chosen tokens' log-probabilities


class LlamaBase:
    """One GGUF base loaded by llama.cpp, with named LoRA adapters (see the module's docstring)."""

    def __init__(self, gguf: str | Path, slots: int = 16, ctx_per_slot: int = 1024, threads: int | None = None):
        import llama_cpp

        _quiet_llama()
        self.path = Path(gguf)
        if not self.path.is_file():
            raise GgufError(f"{self.path}: no such GGUF file")
        self.digest = read_digest(self.path)
        self.slots, self.ctx_per_slot = max(1, slots), ctx_per_slot
        mparams = llama_cpp.llama_model_default_params()
        # a CUDA or Metal build (make LLAMA_BACKEND=cuda|metal) holds every layer on the GPU; a CPU build none
        mparams.n_gpu_layers = 999 if llama_cpp.llama_supports_gpu_offload() else 0
        self.model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            raise GgufError(f"{self.path}: llama.cpp could not load it as a model")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_params = llama_cpp.llama_model_n_params(self.model)
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.slots * ctx_per_slot
        cparams.n_batch = cparams.n_ubatch = min(2048, cparams.n_ctx)
        cparams.n_seq_max = self.slots
        cparams.kv_unified = False  # a cache per sequence: attention reads its own tokens, not all slots'
        cparams.n_threads = cparams.n_threads_batch = threads or os.cpu_count() or 1
        cparams.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise GgufError(f"{self.path}: llama.cpp could not make a context of {cparams.n_ctx} tokens")
        self.n_batch = cparams.n_batch
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.adapters: dict[str, Any] = {}
        self.lock = threading.Lock()

    def add_adapter(self, name: str, gguf: str | Path) -> None:
        """Load a GGUF LoRA adapter under ``name``; refused when it was made for another base."""
        import llama_cpp

        adapter_digest = read_digest(gguf)
        if self.digest and adapter_digest and adapter_digest != self.digest:
            raise GgufError(
                f"{gguf}: adapter made for base {adapter_digest}, but the loaded base is {self.digest} ({self.path})"
            )
        with self.lock:
            if name in self.adapters:
                return
            handle = llama_cpp.llama_adapter_lora_init(self.model, str(gguf).encode())
            if not handle:
                raise GgufError(f"{gguf}: llama.cpp could not load it as a LoRA adapter of {self.path.name}")
            self.adapters[name] = handle

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokens of ``text`` (special tokens parsed, BOS added if the model wants one): for
        GGUF models that come without a transformers tokenizer."""
        import llama_cpp

        raw = text.encode()
        room = len(raw) + 8
        buf = (llama_cpp.llama_token * room)()
        n = llama_cpp.llama_tokenize(self.vocab, raw, len(raw), buf, room, True, True)
        if n < 0:
            raise GgufError(f"{self.path.name}: a text of {len(raw)} bytes does not tokenize into {room} tokens")
        return list(buf[:n])

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of generated tokens, control tokens (end of turn) left out."""
        import llama_cpp

        if not ids:
            return ""
        arr = (llama_cpp.llama_token * len(ids))(*ids)
        room = 64 + 32 * len(ids)
        buf = ctypes.create_string_buffer(room)
        n = llama_cpp.llama_detokenize(self.vocab, arr, len(ids), buf, room, True, False)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def chat(self, conversation: list[dict], template: str | None = None) -> str:
        """The conversation rendered by the model's own chat template (or ``template``: one of llama.cpp's
        named templates, e.g. ``gemma``, ``chatml``), ending where the assistant's answer starts."""
        import llama_cpp

        tmpl = template.encode() if template else llama_cpp.llama_model_chat_template(self.model, None)
        if not tmpl:
            raise GgufError(f"{self.path.name} carries no chat template: name one (chat_template: gemma, chatml, ...)")
        keep = [(m["role"].encode(), m["content"].encode()) for m in conversation]
        chat = (llama_cpp.llama_chat_message * len(keep))(*[llama_cpp.llama_chat_message(r, c) for r, c in keep])
        room = 2 * sum(len(c) for _, c in keep) + 512
        buf = ctypes.create_string_buffer(room)
        n = llama_cpp.llama_chat_apply_template(tmpl, chat, len(keep), True, buf, room)
        if n > room:
            buf = ctypes.create_string_buffer(n)
            n = llama_cpp.llama_chat_apply_template(tmpl, chat, len(keep), True, buf, n)
        if n < 0:
            raise GgufError(f"{self.path.name}: chat template {template or '(the model’s own)'} not known to llama.cpp")
        return buf.raw[:n].decode("utf-8", "replace")

    def drop_adapter(self, name: str) -> None:
        import llama_cpp

        with self.lock:
            handle = self.adapters.pop(name, None)
            if handle:
                llama_cpp.llama_adapter_lora_free(handle)

    def _use(self, adapter: str | None) -> None:
        import llama_cpp

        if adapter is None:
            llama_cpp.llama_set_adapters_lora(self.ctx, None, 0, None)
            return
        if adapter not in self.adapters:
            raise GgufError(f"adapter {adapter!r} is not loaded on {self.path.name}")
        handles = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(self.adapters[adapter])
        scales = (ctypes.c_float * 1)(1.0)
        if llama_cpp.llama_set_adapters_lora(self.ctx, handles, 1, scales) != 0:
            raise GgufError(f"adapter {adapter!r}: llama.cpp would not apply it")

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> list[np.ndarray]:
        """Decode ``(token, position, sequence, wants_logits)`` entries (in chunks of the batch size);
        the logits of the entries that want them, in order."""
        import llama_cpp

        out: list[np.ndarray] = []
        b = self.batch
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start : start + self.n_batch]
            b.n_tokens = len(chunk)
            for i, (token, pos, seq, wants) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, wants
                b.seq_id[i][0] = seq
            rc = llama_cpp.llama_decode(self.ctx, b)
            if rc != 0:
                raise GgufError(f"llama.cpp could not decode a batch of {len(chunk)} tokens (code {rc})")
            for i, (*_, wants) in enumerate(chunk):
                if wants:
                    ptr = llama_cpp.llama_get_logits_ith(self.ctx, i)
                    out.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return out

    def _round(self, seqs: list[_Seq], max_new_tokens: int, stop: frozenset[int] | None) -> None:
        """Answer up to ``slots`` prompts together: one pass over their prompts, then a token per step."""
        import llama_cpp

        memory = llama_cpp.llama_get_memory(self.ctx)
        llama_cpp.llama_memory_clear(memory, True)
        shared = len(common_prefix([q.prompt for q in seqs]))
        if shared:  # the system prompt (and any examples) once, copied to every sequence's cache
            self._decode([(t, p, 0, False) for p, t in enumerate(seqs[0].prompt[:shared])])
            for s in range(1, len(seqs)):
                llama_cpp.llama_memory_seq_cp(memory, 0, s, -1, -1)
        entries = [
            (t, p, s, p == len(q.prompt) - 1) for s, q in enumerate(seqs) for p, t in enumerate(q.prompt) if p >= shared
        ]
        logits = self._decode(entries)
        live = list(range(len(seqs)))
        for q in seqs:
            q.pos = len(q.prompt)
        while live:
            step: list[int] = []
            for s, row in zip(live, logits):
                token = int(np.argmax(row))
                top = float(row[token])
                seqs[s].logprob += -float(np.log(np.exp(row - top).sum()))  # log-softmax at the greedy token
                seqs[s].out.append(token)
                ends = llama_cpp.llama_vocab_is_eog(self.vocab, token) if stop is None else token in stop
                if not ends and len(seqs[s].out) < max_new_tokens:
                    step.append(s)
            live = step
            if live:
                logits = self._decode([(seqs[s].out[-1], seqs[s].pos, s, True) for s in live])
                for s in live:
                    seqs[s].pos += 1

    def generate(
        self,
        prompts: Sequence[list[int]],
        max_new_tokens: int,
        stop: Sequence[int] | None,
        adapter: str | None = None,
    ) -> list[list[int]]:
        """Greedy answers (token ids, the stop token included when one was generated) to tokenized prompts,
        with ``adapter`` (a name given to :meth:`add_adapter`) or the bare base; ``stop``: the tokens that end
        an answer (None: the model's end-of-generation tokens)."""
        return self.generate_scored(prompts, max_new_tokens, stop, adapter)[0]

    def generate_scored(
        self,
        prompts: Sequence[list[int]],
        max_new_tokens: int,
        stop: Sequence[int] | None,
        adapter: str | None = None,
    ) -> tuple[list[list[int]], list[float]]:
        """:meth:`generate`'s answers, and each answer's mean token log-probability (how sure the model was)."""
        self._check_lengths(prompts, max_new_tokens)
        seqs = [_Seq(i, list(p), []) for i, p in enumerate(prompts)]
        order = sorted(seqs, key=lambda q: len(q.prompt))  # similar lengths finish together
        with self.lock:
            self._use(adapter)
            for start in range(0, len(order), self.slots):
                ends = None if stop is None else frozenset(stop)
                self._round(order[start : start + self.slots], max_new_tokens, ends)
        return [q.out for q in seqs], [q.logprob / max(len(q.out), 1) for q in seqs]

    def next_token_logits(self, prompts: Sequence[list[int]], adapter: str | None = None) -> np.ndarray:
        """The logits of the token after each tokenized prompt, one row per prompt: for scoring a fixed set of
        answers (a classifier's label words) by their probability instead of generating one."""
        import llama_cpp

        self._check_lengths(prompts, 1)
        out = np.zeros((len(prompts), self.n_vocab), dtype=np.float32)
        with self.lock:
            self._use(adapter)
            memory = llama_cpp.llama_get_memory(self.ctx)
            for start in range(0, len(prompts), self.slots):
                chunk = range(start, min(start + self.slots, len(prompts)))
                llama_cpp.llama_memory_clear(memory, True)
                entries = [
                    (t, p, s, p == len(prompts[i]) - 1) for s, i in enumerate(chunk) for p, t in enumerate(prompts[i])
                ]
                for i, row in zip(chunk, self._decode(entries)):
                    out[i] = row
        return out

    def _check_lengths(self, prompts: Sequence[list[int]], max_new_tokens: int) -> None:
        too_long = [i for i, p in enumerate(prompts) if len(p) + max_new_tokens > self.ctx_per_slot]
        if too_long:
            raise GgufError(
                f"prompt {too_long[0]} has {len(prompts[too_long[0]])} tokens; with {max_new_tokens} new ones it "
                f"exceeds the {self.ctx_per_slot} tokens of a slot"
            )

    def close(self) -> None:
        import llama_cpp

        with self.lock:
            for handle in self.adapters.values():
                llama_cpp.llama_adapter_lora_free(handle)
            self.adapters.clear()
            if self.ctx:
                llama_cpp.llama_batch_free(self.batch)
                llama_cpp.llama_free(self.ctx)
                llama_cpp.llama_model_free(self.model)
                self.ctx = self.model = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            return
