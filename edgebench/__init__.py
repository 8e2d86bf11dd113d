"""edgebench: honest prefill / decode / memory / op-time measurements of small language models."""

__version__ = "0.1.0"
