"""The shape of a decoder: the dimensions that decide its speed and memory, defined once.

A preset (models.presets.Preset), a GGUF file's header (models.gguf_file.GGUFInfo) and a loaded
model (backends.base.ModelInfo) are each a ModelShape plus their own facts; the memory projection
(models.memory_model.Shapes) holds one.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ModelShape:
    """Counts of layers, heads, elements and tokens. 0 marks a dimension the source does not say;
    ``tied`` is None when it does not say whether the output matrix is the token embedding.

    The field order is the preset table's column order (models.presets)."""

    name: str  # what the model calls itself: preset name, general.name, a folder's name
    arch: str  # llama.cpp architecture name ("llama", "qwen2", ...) or the runtime's model type
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    tied: bool | None  # the output matrix shares the token embedding
    n_ctx_train: int

    def __post_init__(self) -> None:
        for f in fields(ModelShape):
            v = getattr(self, f.name)
            if f.name not in ("name", "arch", "tied") and (not isinstance(v, int) or v < 0):
                raise ValueError(f"{f.name} must be an integer >= 0, got {v!r}")

    @property
    def kv_bytes_per_token_f16(self) -> int:
        """Bytes of K and V one token takes in an f16 cache, over all layers."""
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * 2
