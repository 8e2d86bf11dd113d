"""onnxruntime-genai model folders for the synthetic ONNX decoders of models.synth_onnx: the model
file and the genai_config.json that onnxruntime-genai's model builder would write beside it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgebench.models.cache import locked
from edgebench.models.presets import Preset, get_preset
from edgebench.models.quant_levels import ONNX_QUANTS
from edgebench.models.synth_onnx import Progress, ensure_onnx_model

GENAI_CONFIG = "genai_config.json"


def genai_config(p: Preset, filename: str = "model.onnx") -> dict:
    """The genai_config.json of a synthetic decoder, as onnxruntime-genai's model builder writes it
    for a Llama-block model with GroupQueryAttention (hence past_present_share_buffer). The token
    ids are placeholders: edgebench feeds random ids and never samples. No id is padding (-1):
    genai reads a chunk's logits at its last non-pad token, and every random id is a real one."""
    return {
        "model": {
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": -1,
            # every synthetic graph is a Llama block, whatever the preset's family
            "type": "llama", "context_length": p.n_ctx_train, "vocab_size": p.n_vocab,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename, "head_size": p.head_dim, "hidden_size": p.n_embd,
                "num_attention_heads": p.n_head, "num_hidden_layers": p.n_layer,
                "num_key_value_heads": p.n_head_kv,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {"do_sample": False, "num_beams": 1, "num_return_sequences": 1, "min_length": 0,
                   "max_length": p.n_ctx_train, "past_present_share_buffer": True, "early_stopping": True,
                   "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }


def write_genai_folder(preset: str | Preset, quant: str, cache: Path | None = None,
                       progress: Progress = None) -> Path:
    """``<cache>/models/<preset>-<quant>-genai/``: the cached synthetic model (hard-linked as
    model.onnx, external data under its own name) and a genai_config.json for onnxruntime-genai.
    Built (with the model, if the cache lacks it) in a temporary folder renamed into place: the
    folder's presence means it is whole. Blocks."""
    p, q = (preset if isinstance(preset, Preset) else get_preset(preset)), ONNX_QUANTS.check(quant)
    src = ensure_onnx_model(p, q, cache, progress)
    target = src.parent / f"{p.name}-{q}-genai"
    if (target / GENAI_CONFIG).exists():
        return target
    with locked(target):
        if (target / GENAI_CONFIG).exists():
            return target
        shutil.rmtree(target, ignore_errors=True)  # a folder without its config is not whole
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=src.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the model folder is not
            data = src.with_name(src.name + ".data")
            for s, d in ((src, tmp / "model.onnx"), (data, tmp / data.name)):
                if s.exists():
                    try:
                        os.link(s, d)
                    except OSError:  # another file system, or no hard links there
                        shutil.copy2(s, d)
            (tmp / GENAI_CONFIG).write_text(json.dumps(genai_config(p), indent=2) + "\n")
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
