#!/usr/bin/env python3
"""kvdump: records real attention traces (q, k, v, attention output) of SmolLM2-135M-Instruct.

  python tools/kvdump/kvdump.py check      greedy continuations and a KV-cache self-check
  python tools/kvdump/kvdump.py fixture    regenerates the committed fixture under tests/data/
  python tools/kvdump/kvdump.py full       full dump (all texts, layers, positions) + report

See tools/kvdump/README.md for the file format.
"""

from __future__ import annotations

import os

# Determinism: one BLAS thread, float64 everywhere (set before NumPy is imported).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import smollm  # noqa: E402
import st  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
TEXTS = ["prose", "code", "dialogue", "facts"]
FORMAT = "kvcache-trace/1"

# The committed fixture: 2 texts x 3 layers x 1024 tokens x all heads, fp16: k and v for every
# position, q for the last 256 positions and the recorded attention output for the last 128
# (the replay window), 3.7 MB a text.
FIXTURE_TEXTS = ["prose", "code"]
FIXTURE_LAYERS = [3, 15, 27]
FIXTURE_TOKENS = 1024
FIXTURE_Q_TAIL = 256
FIXTURE_OUT_TAIL = 128
FIXTURE_NAME = "smollm2-135m-{text}-1024.safetensors"
TINY_NAME = "kvdump-tiny.safetensors"

# Window of queries over which the report's attention statistics are taken.
STATS_QUERIES = 512


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def read_text(name: str) -> str:
    with open(os.path.join(HERE, "texts", name + ".txt"), encoding="utf-8") as f:
        return f.read()


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def trace_metadata(model: smollm.Model, text: str, n_tokens: int, layers, q_first: int,
                   out_first: int) -> dict[str, str]:
    c = model.cfg
    return {
        "format": FORMAT,
        "model": smollm.model_description(),
        "text": text,
        "tokens": str(n_tokens),
        "model_layers": str(c.n_layers),
        "layers": ",".join(str(x) for x in layers),
        "q_heads": str(c.n_heads),
        "kv_heads": str(c.n_kv_heads),
        "head_dim": str(c.head_dim),
        "q_first": str(q_first),
        "out_first": str(out_first),
        "scale": repr(1.0 / math.sqrt(c.head_dim)),
        "rope_theta": repr(c.rope_theta),
        "rope_layout": "half",
        "positions": "0-based; q/k after rotary embedding at their position",
    }


def trace_tensors(ids, records, layers, q_first: int, out_first: int) -> dict:
    tensors = {"tokens": np.asarray(ids, dtype=np.int32)}
    for layer in layers:
        r = records[layer]
        tensors[f"layer{layer}.q"] = r["q"][q_first:].astype(np.float16)
        tensors[f"layer{layer}.k"] = r["k"].astype(np.float16)
        tensors[f"layer{layer}.v"] = r["v"].astype(np.float16)
        tensors[f"layer{layer}.out"] = r["out"][out_first:].astype(np.float16)
    return tensors


def write_tiny(path: str) -> None:
    """A small file with every dtype and edge case the C++ reader must round-trip."""
    tensors = {
        "a.f16": (np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5 - 1.0).astype(np.float16),
        "b.bf16": st.BF16(st.f32_to_bf16_bits(np.array([1.0, -2.5, 3.140625, 0.0], np.float32))),
        "c.f32": np.arange(8, dtype=np.float32).reshape(2, 2, 2) * 0.25,
        "d.i32": np.array([1, -2, 2147483647], dtype=np.int32),
        "e.scalar": np.array(42.0, dtype=np.float32),
        "f.empty": np.zeros((0, 4), dtype=np.float16),
        "g.f16.special": np.array([65504.0, -0.0, 2.0 ** -24, 1.0 / 3.0], dtype=np.float16),
    }
    st.write(path, tensors, {"format": "kvdump-tiny/1", "purpose": "C++ reader round-trip test"})


def cmd_fixture(args) -> None:
    out_dir = args.out or os.path.join(ROOT, "tests", "data")
    os.makedirs(out_dir, exist_ok=True)
    model = smollm.Model()
    written = []
    for text in FIXTURE_TEXTS:
        ids = model.tokenizer.encode(read_text(text))[:FIXTURE_TOKENS]
        assert len(ids) == FIXTURE_TOKENS, (text, len(ids))
        t0 = time.time()
        _, records = model.forward(ids, record=set(FIXTURE_LAYERS))
        log(f"{text}: forward over {len(ids)} tokens in {time.time() - t0:.1f} s")
        q_first = FIXTURE_TOKENS - FIXTURE_Q_TAIL
        out_first = FIXTURE_TOKENS - FIXTURE_OUT_TAIL
        path = os.path.join(out_dir, FIXTURE_NAME.format(text=text))
        st.write(path, trace_tensors(ids, records, FIXTURE_LAYERS, q_first, out_first),
                 trace_metadata(model, text, len(ids), FIXTURE_LAYERS, q_first, out_first))
        written.append(path)
    tiny = os.path.join(out_dir, TINY_NAME)
    write_tiny(tiny)
    written.append(tiny)
    for path in written:
        print(f"{sha256(path)}  {os.path.relpath(path, ROOT)}  ({os.path.getsize(path)} bytes)")


class AttentionStats:
    """Accumulates, per layer, over the last STATS_QUERIES queries of a text and all heads:
    the attention mass on the first 4 tokens, and the fraction of the visible tokens that hold
    90% of the mass (smallest such set)."""

    def __init__(self, n_layers: int, first_query: int):
        self.first_query = first_query
        self.sink = np.zeros(n_layers)
        self.frac90 = np.zeros(n_layers)
        self.count = np.zeros(n_layers)

    def __call__(self, layer, qpos, probs):
        sel = qpos >= self.first_query
        if not sel.any():
            return
        p = probs[:, sel, :]  # [Hq, rows, T]
        self.sink[layer] += p[..., :4].sum(axis=-1).sum()
        visible = (qpos[sel] + 1).astype(np.float64)  # tokens the query can see
        srt = -np.sort(-p, axis=-1)
        need = (np.cumsum(srt, axis=-1) < 0.9).sum(axis=-1) + 1  # [Hq, rows]
        self.frac90[layer] += (need / visible[None, :]).sum()
        self.count[layer] += p.shape[0] * p.shape[1]


def channel_ratio(mag_sum: np.ndarray) -> float:
    """max / median of per-channel mean magnitudes (all heads' channels of one layer)."""
    flat = mag_sum.reshape(-1)
    return float(flat.max() / np.median(flat))


def cmd_full(args) -> None:
    out_dir = args.out or os.path.join(HERE, "out", "full")
    os.makedirs(out_dir, exist_ok=True)
    model = smollm.Model()
    c = model.cfg
    layers = list(range(c.n_layers))
    report = {"model": smollm.model_description(), "stats_queries": STATS_QUERIES, "texts": {}}
    k_mag = np.zeros((c.n_layers, c.n_kv_heads, c.head_dim))
    v_mag = np.zeros((c.n_layers, c.n_kv_heads, c.head_dim))
    n_tok = 0
    sink = np.zeros(c.n_layers)
    frac = np.zeros(c.n_layers)
    cnt = np.zeros(c.n_layers)
    texts = args.texts.split(",") if args.texts else TEXTS
    for text in texts:
        ids = model.tokenizer.encode(read_text(text))
        stats = AttentionStats(c.n_layers, len(ids) - STATS_QUERIES)
        t0 = time.time()
        hidden, records = model.forward(ids, record=set(layers), on_probs=stats)
        nll = model.nll(ids, hidden)
        log(f"{text}: {len(ids)} tokens, forward {time.time() - t0:.1f} s, ppl {math.exp(nll):.3f}")
        for layer in layers:
            k_mag[layer] += np.abs(records[layer]["k"]).sum(axis=0)
            v_mag[layer] += np.abs(records[layer]["v"]).sum(axis=0)
        n_tok += len(ids)
        sink += stats.sink
        frac += stats.frac90
        cnt += stats.count
        path = os.path.join(out_dir, f"smollm2-135m-{text}.safetensors")
        st.write(path, trace_tensors(ids, records, layers, 0, 0),
                 trace_metadata(model, text, len(ids), layers, 0, 0))
        report["texts"][text] = {
            "tokens": len(ids), "perplexity": math.exp(nll), "file": os.path.basename(path),
            "sink_share": (stats.sink / stats.count).tolist(),
            "frac90": (stats.frac90 / stats.count).tolist()}
        del records, hidden
    report["per_layer"] = [
        {"layer": layer,
         "sink_share_first4": sink[layer] / cnt[layer],
         "frac_tokens_90pct_mass": frac[layer] / cnt[layer],
         "key_outlier_ratio": channel_ratio(k_mag[layer] / n_tok),
         "value_outlier_ratio": channel_ratio(v_mag[layer] / n_tok)}
        for layer in layers]
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"model: {report['model']}")
    print("| text | tokens | perplexity |\n| --- | ---: | ---: |")
    for text, r in report["texts"].items():
        print(f"| {text} | {r['tokens']} | {r['perplexity']:.2f} |")
    print(f"\nper layer, over the last {STATS_QUERIES} queries of each text and all heads:")
    print("| layer | mass on first 4 tokens | tokens holding 90% of mass | key max/median channel "
          "| value max/median channel |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in report["per_layer"]:
        print(f"| {r['layer']} | {r['sink_share_first4']:.3f} | {r['frac_tokens_90pct_mass']:.3f} "
              f"| {r['key_outlier_ratio']:.1f} | {r['value_outlier_ratio']:.1f} |")


CHECK_PROMPTS = [
    ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
             "Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Tell me a "
             "little about it.<|im_end|>\n<|im_start|>assistant\n"),
    ("raw", "The lighthouse keeper climbed the stairs every evening to"),
]


def cmd_check(args) -> None:
    model = smollm.Model()
    tk = model.tokenizer
    # 1. the cached (decode) path and the full path agree
    ids = tk.encode(read_text("dialogue"))[:96]
    hidden_full, rec_full = model.forward(ids, record={0, 29})
    cache = []
    hidden_a, _ = model.forward(ids[:64], cache=cache)
    hidden_b, _ = model.forward(ids[64:], cache=cache)
    diff = np.abs(np.concatenate([hidden_a, hidden_b]) - hidden_full).max()
    log(f"KV-cache path vs full pass: max |diff| of hidden states = {diff:.3g}")
    assert diff < 1e-9, diff
    # 2. greedy continuations
    im_end = tk.encode("<|im_end|>")
    for name, prompt in CHECK_PROMPTS:
        new = model.generate(tk.encode(prompt), args.max_new, stop=set(im_end) | {tk.eos_id})
        print(f"--- {name} prompt: {prompt!r}\n--- greedy continuation ({len(new)} tokens):")
        print(tk.decode(new))
    # 3. perplexity of each text
    if not args.no_ppl:
        for text in TEXTS:
            ids = tk.encode(read_text(text))
            hidden, _ = model.forward(ids)
            print(f"perplexity {text}: {math.exp(model.nll(ids, hidden)):.3f} ({len(ids)} tokens)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fixture", help="regenerate the committed fixture under tests/data/")
    p.add_argument("--out", help="output folder (default: tests/data)")
    p.set_defaults(fn=cmd_fixture)
    p = sub.add_parser("full", help="full dump of all texts and layers, with report")
    p.add_argument("--out", help="output folder (default: tools/kvdump/out/full)")
    p.add_argument("--texts", help="comma-separated subset of " + ",".join(TEXTS))
    p.set_defaults(fn=cmd_full)
    p = sub.add_parser("check", help="greedy continuations, KV-cache self-check, perplexities")
    p.add_argument("--max-new", type=int, default=80)
    p.add_argument("--no-ppl", action="store_true")
    p.set_defaults(fn=cmd_check)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
