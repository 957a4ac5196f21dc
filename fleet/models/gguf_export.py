"""GGUF files for llama.cpp: a causal base model (f16, or quantized), and a peft LoRA adapter on it.

llama.cpp runs a base from one GGUF file and applies LoRA adapters, each a small GGUF file of its own, per
context. This module writes both from what the fleet already stores: a base is the transformers folder
``fleet.models.base_store`` keeps by content hash (its tokenizer files included), an adapter is the peft
folder of a registered version. Llama-family bases (``LlamaForCausalLM``: SmolLM2, Llama, most small
instruct models) are supported; another architecture is refused with its name.

Two conventions of llama.cpp matter for correctness: the rows of the query and key projections are
permuted (llama.cpp's rotary layout), so the ``B`` matrix of a LoRA on ``q_proj``/``k_proj`` is permuted
the same way; and an adapter's scale is ``alpha / rank`` with ``alpha`` stored in the file, as peft's is.
Both files carry ``fleet.base_digest``, so an adapter is never applied to a base it was not trained on.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

QUANTS = ("f16", "q8_0", "q4_k_m")
ARCH = "llama"
DIGEST_KEY = "fleet.base_digest"
ADAPTER_FILE = "adapter.gguf"  # saved beside a generative version's peft adapter


class GgufError(RuntimeError):
    """A GGUF file could not be written or does not fit; the message says which and why."""


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order of a query/key projection (as its convert_hf_to_gguf writes it)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise GgufError(f"{folder}: no readable config.json ({exc})") from None
    archs = config.get("architectures") or [config.get("model_type", "?")]
    if config.get("model_type") != ARCH:
        raise GgufError(
            f"{folder}: a {archs[0]} model; GGUF export supports Llama-family bases (LlamaForCausalLM) only"
        )
    return config


def _tensor_name(hf_name: str, n_blocks: int) -> str:
    """The GGUF name of a transformers parameter (``model.layers.0.self_attn.q_proj.weight`` -> ``blk.0.attn_q.weight``)."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    found = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise GgufError(f"parameter {hf_name!r} has no llama.cpp counterpart")
    return found


def _base_tensors(folder: Path, config: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
    from safetensors.numpy import load_file

    n_blocks, n_head, n_kv = (
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config.get("num_key_value_heads") or config["num_attention_heads"],
    )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise GgufError(f"{folder}: no .safetensors weights to convert")
    for file in files:
        for name, w in load_file(str(file)).items():
            if name == "lm_head.weight" and config.get("tie_word_embeddings"):
                continue  # llama.cpp reads the output projection from the token embeddings
            if name.endswith("q_proj.weight"):
                w = _permute(w, n_head)
            elif name.endswith("k_proj.weight"):
                w = _permute(w, n_kv)
            yield _tensor_name(name, n_blocks), w


def _pre_tokenizer(folder: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-splitting (only used when llama.cpp itself tokenizes, as
    ``llama-server`` does; the fleet tokenizes with the base's own tokenizer)."""
    try:
        pre = json.loads((folder / "tokenizer.json").read_text()).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return "default"
    return "gpt-2" if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) else "default"


def _add_vocab(writer: Any, folder: Path, n_vocab: int) -> None:
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = dict(tokenizer.added_tokens_decoder)
    tokens, types = [], []
    for i in range(n_vocab):
        if i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(folder))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    special.add_to_gguf(writer, quiet=True)
    template = folder / "chat_template.jinja"
    if template.is_file() and special.chat_template is None:
        writer.add_chat_template(template.read_text())


def _add_hparams(writer: Any, config: dict[str, Any]) -> None:
    rope = config.get("rope_parameters") or {}
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads") or config["num_attention_heads"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-5))
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_vocab_size(config["vocab_size"])


def _finish(writer: Any) -> None:
    """Write a GGUFWriter's header, metadata and tensors, in the order the format wants, and close it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _write_atomic(dest: Path, write: Any) -> None:
    """Write through a temporary file beside ``dest``, renamed at the end: a failed conversion leaves
    nothing that looks finished."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_base(folder: str | Path, dest: str | Path, base_digest: str, quant: str = "f16") -> Path:
    """The base model in ``folder`` as one GGUF file at ``dest``: f16 matrices (f32 norms), or ``q8_0`` /
    ``q4_k_m`` quantized from that f16 file by llama.cpp's own quantizer."""
    if quant not in QUANTS:
        raise GgufError(f"GGUF quantization {quant!r}: choose one of {', '.join(QUANTS)}")
    folder, dest = Path(folder), Path(dest)
    config = _config(folder)
    if quant != "f16":
        f16 = dest.with_name(dest.name + ".f16")
        write_base(folder, f16, base_digest, "f16")
        try:
            _write_atomic(dest, lambda tmp: _quantize(f16, tmp, quant))
        finally:
            f16.unlink(missing_ok=True)
        return dest

    def write(tmp: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_name(config.get("_model_name_or_path") or folder.name)
        writer.add_string(DIGEST_KEY, base_digest)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        _add_hparams(writer, config)
        _add_vocab(writer, folder, config["vocab_size"])
        for name, w in _base_tensors(folder, config):
            data = w.astype(np.float16) if w.ndim >= 2 else w.astype(np.float32)
            writer.add_tensor(name, data)
        _finish(writer)

    _write_atomic(dest, write)
    return dest


def _quantize(src: Path, dest: Path, quant: str) -> None:
    import llama_cpp

    ftype = {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[quant]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dest).encode(), params) != 0:
        raise GgufError(f"{src}: llama.cpp could not quantize it to {quant}")


def _lora_pairs(state: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(transformers parameter, A, B) of each adapted matrix of a peft state dict."""
    for key, a in sorted(state.items()):
        if ".lora_A." not in key:
            continue
        b = state.get(key.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise GgufError(f"adapter tensor {key} has no lora_B partner")
        base = key.replace("base_model.model.", "", 1).replace(".lora_A.weight", ".weight")
        yield base.replace(".lora_A.default.weight", ".weight"), a, b


def write_adapter(adapter_dir: str | Path, base_folder: str | Path, dest: str | Path, base_digest: str) -> Path:
    """The peft LoRA adapter in ``adapter_dir`` (trained on the base in ``base_folder``) as a GGUF LoRA file."""
    from safetensors.numpy import load_file

    adapter_dir, dest = Path(adapter_dir), Path(dest)
    config = _config(Path(base_folder))
    try:
        settings = json.loads((adapter_dir / "adapter_config.json").read_text())
        state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise GgufError(f"{adapter_dir}: no readable peft adapter ({exc})") from None
    if settings.get("use_rslora") or settings.get("use_dora"):
        raise GgufError(f"{adapter_dir}: rsLoRA/DoRA adapters have no llama.cpp form")
    if settings.get("modules_to_save"):
        raise GgufError(
            f"{adapter_dir}: trained modules beside the LoRA ({settings['modules_to_save']}) do not convert"
        )
    n_blocks, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head

    def write(tmp: Path) -> None:
        import gguf

        writer = gguf.GGUFWriter(str(tmp), ARCH)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(settings.get("lora_alpha", settings.get("r", 8))))
        writer.add_string(DIGEST_KEY, base_digest)
        pairs = 0
        for name, a, b in _lora_pairs(state):
            if name.endswith("q_proj.weight"):
                b = _permute(b, n_head)
            elif name.endswith("k_proj.weight"):
                b = _permute(b, n_kv)
            gname = _tensor_name(name, n_blocks)
            writer.add_tensor(f"{gname}.lora_a", a.astype(np.float32))
            writer.add_tensor(f"{gname}.lora_b", b.astype(np.float32))
            pairs += 1
        if pairs == 0:
            raise GgufError(f"{adapter_dir}: the adapter holds no LoRA matrices")
        _finish(writer)

    _write_atomic(dest, write)
    return dest


def read_digest(path: str | Path) -> str | None:
    """The base digest a fleet-written GGUF file carries (None for a file written elsewhere)."""
    import gguf

    try:
        field = gguf.GGUFReader(str(path)).get_field(DIGEST_KEY)
    except (OSError, ValueError) as exc:
        raise GgufError(f"{path}: not a readable GGUF file ({exc})") from None
    return None if field is None else str(field.contents())
