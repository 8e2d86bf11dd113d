"""A backend with deterministic timings and injectable failures, for testing everything around
the runtimes (runner, store, CLI, reports). Its "model" is a small JSON file ending in .fake:

  {"prefill_us_per_token": 20, "decode_us": 300, "fail": "", "fail_at": "load",
   "n_params": 1000000, "quant": "Q4_K_M", "bpw": 4.5}

fail: "" | "error" (Python exception) | "crash" (SIGSEGV) | "oom" (SIGKILL) | "hang" (sleeps)
      | "abort" (SIGABRT, as a GGML_ASSERT does)
fail_at: "load" | "prefill" | "decode". Timings are sleeps, so they are real wall time.
"slow_prefills": N, "slow_us": U make the first N prefill calls U microseconds slower (a cold
first rep, for -r auto's outlier rule: the warmup is one prefill call).
"process_levels": [m0, m1, ...] multiply every timing by m_(j mod len), j counting the loads of this
model file (in "<model>.loads" beside it): consecutive worker processes run at different speeds
(between-process variance, for --processes and -r auto).
Fault hooks: "stderr": lines printed to stderr just before the failure (what a runtime logs, e.g.
a GGML_ASSERT line and a backtrace), "error_text": the injected exception's message,
"alloc_mib": MiB allocated (and touched) at load, to meet a memory limit.

Logits (capability "logits", for quality-pass tests): deterministic, a function of the current token
only: row t of a fixed table (seed 0) plus ``logit_noise`` x row t of a table seeded by
``logit_seed``, so a "level" with more noise is further from the noiseless reference. tokenize():
one token per UTF-8 byte (mod n_vocab), BOS ``bos`` first when the config names one.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from edgebench.backends.base import Backend, MemoryInfo, ModelInfo
from edgebench.errors import InputError
from edgebench.records import Case


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class FakeBackend(Backend):
    name: ClassVar[str] = "fake"
    capabilities: ClassVar[frozenset[str]] = frozenset({"kv_bytes", "logits"})
    suffixes: ClassVar[tuple[str, ...]] = (".fake",)
    KV_BYTES_PER_TOKEN = 1024

    def __init__(self) -> None:
        self.cfg: dict = {}
        self.case: Case | None = None
        self.n_cached = 0
        self._table = None
        self.level = 1.0  # process_levels: this process's speed factor

    def _maybe_fail(self, where: str) -> None:
        if self.cfg.get("fail") and self.cfg.get("fail_at", "load") == where:
            kind = self.cfg["fail"]
            for line in self.cfg.get("stderr", ()):
                print(line, file=sys.stderr, flush=True)
            if kind == "error":
                raise RuntimeError(self.cfg.get("error_text") or f"injected failure at {where}")
            if kind == "abort":
                os.abort()
            if kind == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
            if kind == "oom":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "hang":
                time.sleep(3600)

    def load(self, case: Case) -> ModelInfo:
        try:
            self.cfg = json.loads(Path(case.model).read_text() or "{}")
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"fake model {case.model}: {e}") from None
        self.case = case
        self.level = self._next_level(Path(case.model))
        if self.cfg.get("alloc_mib"):  # bytearray touches every page: a memory limit is met here
            self._ballast = bytearray(int(self.cfg["alloc_mib"]) * 2**20)
        self._maybe_fail("load")
        n_params = int(self.cfg.get("n_params", 1_000_000))
        bpw = float(self.cfg.get("bpw", 16.0))
        return ModelInfo(
            name=self.cfg.get("name", Path(case.model).stem), arch="fake",
            quant=self.cfg.get("quant", "F16"), bpw=bpw, n_params=n_params,
            model_bytes=int(n_params * bpw / 8), n_layer=2, n_embd=64, n_head=4, n_head_kv=2,
            head_dim=16, n_ff=0, n_vocab=int(self.cfg.get("n_vocab", 1000)), tied=None, n_ctx_train=4096,
            n_ctx_runtime=case.ctx_effective, extra={"embed_params": n_params // 10},
        )

    def _next_level(self, model: Path) -> float:
        """This process's speed factor (process_levels); counts the load in the file beside the model."""
        levels = self.cfg.get("process_levels")
        if not levels:
            return 1.0
        counter = model.with_name(model.name + ".loads")
        j = int(counter.read_text() or 0) if counter.exists() else 0
        counter.write_text(str(j + 1))
        return float(levels[j % len(levels)])

    def reset(self) -> None:
        self.n_cached = 0

    def prefill(self, tokens: Sequence[int]) -> None:
        self._maybe_fail("prefill")
        self.n_prefills = getattr(self, "n_prefills", 0) + 1
        cold = self.cfg.get("slow_us", 0) if self.n_prefills <= self.cfg.get("slow_prefills", 0) else 0
        _busy_wait(self.level * (len(tokens) * self.cfg.get("prefill_us_per_token", 20) + cold) / 1e6)
        self.n_cached += len(tokens)

    def decode_step(self, token: int) -> None:
        self._maybe_fail("decode")
        _busy_wait(self.level * self.cfg.get("decode_us", 300) / 1e6)
        self.n_cached += 1

    def memory(self) -> MemoryInfo:
        n_params = int(self.cfg.get("n_params", 1_000_000))
        return MemoryInfo({"CPU": int(n_params * float(self.cfg.get("bpw", 16)) / 8)},
                          {"CPU": self.KV_BYTES_PER_TOKEN * self.case.ctx_effective}, {"CPU": 4096})

    def kv_used_bytes(self) -> int:
        return self.KV_BYTES_PER_TOKEN * self.n_cached

    def versions(self) -> dict[str, str]:
        return {"fake": "1"}

    # -- capability "logits" -----------------------------------------------------------------
    @property
    def n_vocab(self) -> int:
        return int(self.cfg.get("n_vocab", 1000))

    def tokenize(self, text: str) -> list[int]:
        bos = self.bos_token()
        return ([] if bos is None else [bos]) + [b % self.n_vocab for b in text.encode("utf-8")]

    def bos_token(self) -> int | None:
        bos = self.cfg.get("bos")
        return None if bos is None else int(bos)

    def _logit_table(self):
        import numpy as np

        if self._table is None:
            v = self.n_vocab
            table = np.random.default_rng(0).standard_normal((v, v), dtype=np.float32) * 3
            noise = float(self.cfg.get("logit_noise", 0.0))
            if noise:
                table += noise * np.random.default_rng(int(self.cfg.get("logit_seed", 1))).standard_normal(
                    (v, v), dtype=np.float32)
            self._table = table
        return self._table

    def logits(self, tokens: Sequence[int]):
        import numpy as np

        self.reset()
        self.n_cached = len(tokens)
        return self._logit_table()[np.asarray(tokens, dtype=np.int64)].copy()

    def step_logits(self, token: int):
        self.n_cached += 1
        return self._logit_table()[int(token)].copy()
