"""The quality pass the worker runs after a case's speed reps (case.quality): the level's next-token
distributions scored against the reference's on the same tokens, following llama-perplexity.

Tokens: case.quality_text tokenized by the model's own tokenizer, or, without a text, a stream the
reference model generates itself from quality_seed (each chunk sampled from its own distributions
with numpy's default_rng(seed), starting at BOS), cached in $EDGEBENCH_HOME/quality/ by reference
sha256 + seed + length so every level reads the same tokens.

Chunks of quality_ctx tokens; the first token of each replaced by BOS where the model adds one;
the logits of positions ctx/2 .. ctx-2 scored against the next token (llama-perplexity's
first = n_ctx/2). The reference case (quality_ref "") writes the compact reference (top-K log-probs
+ rest mass, models/quality_ref.py) and scores itself (KLD 0, same top 100%); a candidate reads it.
One chunk's full logits at a time: memory stays bounded by ctx x n_vocab floats.

Samples: phase "quality", rep 0, idx = scored token index, metrics kld, delta_p, same_top (0/1),
nll, nll_ref. Info "quality": where the reference came from and what was scored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.analysis import quality as qm
from edgebench.models import quality_ref as qref
from edgebench.models.cache import file_sha256
from edgebench.profilers.memory import vm_hwm_bytes
from edgebench.records import Case, Sample
from edgebench.run import protocol as msg

QUALITY_STREAM_CHUNKS = 4  # chunks of a generated stream when quality_chunks is 0
STAGE = "quality"
REF_QUANT = "quant:"  # Case.quality_ref "quant:F16": the same model built at F16 (presets, requantized files)


class QualityError(RuntimeError):
    """The quality pass cannot run for this case; the message is the case's one-line reason."""


def scored_range(ctx: int) -> tuple[int, int]:
    """Positions whose logits are scored in a chunk of ``ctx`` tokens: [ctx/2, ctx-1)."""
    return ctx // 2, ctx - 1


def run_quality(backend, case: Case, emit: Callable[[msg.Message], None],
                resolve_ref: Callable[[str], str]) -> None:
    """The whole pass for one loaded backend. ``resolve_ref(case.quality_ref)`` returns the
    reference model's path (a "quant:LEVEL" reference is built or found in the cache)."""
    if "logits" not in backend.capabilities:
        raise QualityError(f"{backend.name} cannot compute logits: no quality pass on this backend")
    is_ref = not case.quality_ref
    ref_model = case.model if is_ref else resolve_ref(case.quality_ref)
    if not ref_model or not Path(ref_model).exists():
        raise QualityError(f"reference model {case.quality_ref!r} not found (its reference case must be built first)")
    ref_sha = file_sha256(ref_model)
    ctx, k = case.quality_ctx, case.quality_top_k or qm.DEFAULT_TOP_K
    n_vocab = backend.n_vocab
    if not is_ref:
        _check_vocab(ref_model, ref_sha, n_vocab)
    tokens, seed = _tokens(backend, case, ref_model, ref_sha, is_ref, emit)
    n_chunks = len(tokens) // ctx
    if case.quality_chunks:
        n_chunks = min(n_chunks, case.quality_chunks)
    tokens = np.asarray(tokens[:n_chunks * ctx], dtype=np.int32).copy()
    bos = backend.bos_token()
    if bos is not None:
        tokens[::ctx] = bos  # as llama-perplexity: every chunk starts at BOS
    tok_sha = qref.tokens_sha256(tokens)
    path = qref.ref_path(ref_sha, tok_sha, ctx, k)
    ref = None
    if not is_ref:
        ref = _read_ref(path, ref_model, ref_sha, tok_sha, n_vocab, ctx, k)
    first, last = scored_range(ctx)
    per_chunk = last - first
    made: list[qm.RefChunk] = []
    emit(msg.Progress(STAGE, 0, n_chunks))
    for c in range(n_chunks):
        chunk = tokens[c * ctx:(c + 1) * ctx]
        logits = backend.logits(chunk.tolist())[first:last]
        targets = chunk[first + 1:last + 1]
        if is_ref:
            rc = qm.compress(logits, targets, k)
            made.append(rc)
        else:
            a, b = c * per_chunk, (c + 1) * per_chunk
            rc = qm.RefChunk(ref["top_ids"][a:b], ref["top_logp"][a:b], ref["rest_logp"][a:b], ref["target_logp"][a:b])
        s = qm.score(rc, logits, targets)
        del logits
        base = c * per_chunk
        emit(msg.Samples(tuple(
            Sample(0, STAGE, name, float(v), idx=base + i)
            for name, arr in (("kld", s.kld), ("delta_p", s.delta_p), ("same_top", s.same_top.astype(np.float64)),
                              ("nll", s.nll), ("nll_ref", s.nll_ref))
            for i, v in enumerate(arr))))
        emit(msg.Progress(STAGE, c + 1, n_chunks))
    if is_ref:
        all_ = qm.concat(made)
        meta = {"ref_sha256": ref_sha, "tokens_sha256": tok_sha, "ctx": ctx, "top_k": k, "n_vocab": n_vocab,
                "chunks": n_chunks, "scored": all_.n}
        size = qref.write_ref(path, {"top_ids": all_.top_ids, "top_logp": all_.top_logp, "rest_logp": all_.rest_logp,
                                     "target_logp": all_.target_logp}, meta)
    else:
        size = path.stat().st_size
    info: dict[str, Any] = {
        "ref": str(ref_model), "ref_sha256": ref_sha, "is_reference": is_ref, "tokens_sha256": tok_sha,
        "text": case.quality_text, "seed": seed, "ctx": ctx, "chunks": n_chunks, "top_k": k,
        "scored_tokens": n_chunks * per_chunk, "bos_replaced": bos is not None, "ref_file": str(path),
        "ref_file_bytes": size, "peak_rss_bytes": _peak_rss_bytes(),
    }
    if case.quality_chunks and n_chunks < case.quality_chunks:
        info["chunks_requested"] = case.quality_chunks
    emit(msg.Info({"quality": info}))


def _tokens(backend, case: Case, ref_model: str, ref_sha: str, is_ref: bool, emit) -> tuple[np.ndarray, int | None]:
    """The tokens to score (all the text gives, or the generated stream) and the seed (None for a text)."""
    ctx = case.quality_ctx
    if case.quality_text:
        try:
            text = Path(case.quality_text).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise QualityError(f"cannot read text {case.quality_text}: {e}") from None
        try:
            tokens = np.asarray(backend.tokenize(text), dtype=np.int32)
        except NotImplementedError as e:  # a model without a tokenizer: the reason is the message
            raise QualityError(str(e)) from None
        if len(tokens) < ctx:
            raise QualityError(f"text {case.quality_text} gives {len(tokens)} tokens: too short for one chunk of "
                               f"{ctx} (use a longer text or a smaller --quality-ctx)")
        return tokens, None
    n_chunks = case.quality_chunks or QUALITY_STREAM_CHUNKS
    path = qref.stream_path(ref_sha, case.quality_seed, n_chunks * ctx)
    if path.exists():
        return qref.read_stream(path), case.quality_seed
    if not is_ref:
        raise QualityError(f"no token stream generated by the reference {Path(ref_model).name} (seed "
                           f"{case.quality_seed}, {n_chunks * ctx} tokens): its reference case must run first")
    tokens = generate_stream(backend, n_chunks, ctx, case.quality_seed, emit)
    qref.write_stream(path, tokens)
    return tokens, case.quality_seed


def generate_stream(backend, n_chunks: int, ctx: int, seed: int, emit=None) -> np.ndarray:
    """``n_chunks`` x ``ctx`` tokens sampled from the backend's own next-token distributions
    (temperature 1, inverse CDF with default_rng(seed)); each chunk a fresh sequence starting at BOS
    (token 0, a GPT-2-style vocabulary's <|endoftext|>, for a model that adds none)."""
    rng = np.random.default_rng(seed)
    start = backend.bos_token()
    start = 0 if start is None else start
    out = np.empty(n_chunks * ctx, dtype=np.int32)
    backend.fit_context(ctx)
    for c in range(n_chunks):
        backend.reset()
        tok = start
        out[c * ctx] = tok
        for i in range(1, ctx):
            logits = np.asarray(backend.step_logits(int(tok)), dtype=np.float64)
            p = np.exp(logits - logits.max())
            cdf = np.cumsum(p)
            tok = int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))
            out[c * ctx + i] = tok
        if emit is not None:
            emit(msg.Progress(STAGE, c + 1, n_chunks, profiler="generate"))
    return out


def _check_vocab(ref_model: str, ref_sha: str, n_vocab: int) -> None:
    """A candidate whose vocabulary differs from every reference file's of that model fails here."""
    metas = []
    for p in qref.refs_of(ref_sha):
        try:
            metas.append(qref.read_meta(p))
        except (OSError, ValueError, KeyError):
            continue
    if not metas:
        raise QualityError(f"no reference logits from {Path(ref_model).name}: its reference case must run "
                           f"first (it failed or did not run)")
    vocabs = {m.get("n_vocab") for m in metas}
    if n_vocab not in vocabs:
        raise QualityError(f"the reference {Path(ref_model).name} has a vocabulary of {sorted(vocabs)[0]} tokens, "
                           f"this model {n_vocab}: another vocabulary cannot be scored against it")


def _read_ref(path: Path, ref_model: str, ref_sha: str, tok_sha: str, n_vocab: int, ctx: int, k: int) -> dict:
    if not path.exists():
        raise QualityError(f"the reference logits of {Path(ref_model).name} do not match this case's tokens "
                           f"(another text, seed, --quality-ctx or tokenizer): no file for tokens {tok_sha[:16]}")
    try:
        arrays, meta = qref.read_ref(path)
    except (OSError, ValueError, KeyError) as e:
        raise QualityError(f"reference file {path} is unreadable: {e}") from None
    want = {"ref_sha256": ref_sha, "tokens_sha256": tok_sha, "ctx": ctx, "top_k": k, "n_vocab": n_vocab}
    bad = [key for key, v in want.items() if meta.get(key) != v]
    if bad:
        raise QualityError(f"reference file {path.name} does not match this case ({', '.join(bad)} differ)")
    return arrays


def _peak_rss_bytes() -> int:
    """The worker's own peak RSS. Not getrusage's ru_maxrss: Linux carries the pre-exec high-water
    mark (the parent's RSS when it forked the worker) into it across exec."""
    hwm = vm_hwm_bytes()
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
