#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on contiguous K/V: the reference of kvcache-bench-attention.

Decode shapes of issue 9: f16, 32 query heads, 8 kv heads, head_dim 128, (batch, context) =
(64, 4k), (64, 8k), (16, 32k), (1, 128k); one query token per sequence. Backends: cuDNN and
flash. GQA is given to SDPA two ways and each is timed where the backend takes it:
  * "gqa":     q [B, 32, 1, D], k/v [B, 8, L, D], enable_gqa=True;
  * "grouped": the 4 query heads of a kv head as 4 query rows: q [B, 8, 4, D], k/v [B, 8, L, D]
               (the same function, K/V read once per kv head).
Times: CUDA events, median of 30 calls after 5 warm-ups. kv_GBps = K + V bytes / time, and
fraction_of_memcpy = kv_GBps over the rate of a 1 GiB device-to-device copy measured here
(bytes read + written, as kvcache-bench-attention counts it). Writes JSON (--out).
"""
import argparse
import json
import statistics
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
import torch.nn.functional as F

SHAPES = [(64, 4096), (64, 8192), (16, 32768), (1, 131072)]
QO, KV, D = 32, 8, 128


def time_ms(fn, warmup=5, reps=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def copy_rate():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a), 3, 9)
    return 2 * n / (ms / 1e3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="sdpa_reference.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    rate = copy_rate()
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version(), "memcpy_GBps": rate / 1e9, "cases": []}
    print(f"device {res['device']} torch {res['torch']} copy {rate / 1e9:.0f} GB/s", flush=True)
    for batch, ctx in SHAPES:
        q = torch.randn(batch, QO, 1, D, dtype=torch.float16, device="cuda")
        k = torch.randn(batch, KV, ctx, D, dtype=torch.float16, device="cuda")
        v = torch.randn(batch, KV, ctx, D, dtype=torch.float16, device="cuda")
        qg = q.view(batch, KV, QO // KV, D)  # query heads of a group as rows
        kv_bytes = 2 * k.numel() * 2
        ref = F.scaled_dot_product_attention(qg.float(), k.float(), v.float())
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            for form in ("gqa", "grouped"):
                entry = {"batch": batch, "context": ctx, "backend": name, "form": form}
                try:
                    with sdpa_kernel([backend]):
                        if form == "gqa":
                            fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                            out = fn().view(batch, KV, QO // KV, D)
                        else:
                            fn = lambda: F.scaled_dot_product_attention(qg, k, v)
                            out = fn()
                        err = (out.float() - ref).abs().max().item()
                        ms = time_ms(fn)
                    entry.update({"us": ms * 1e3, "kv_GBps": kv_bytes / (ms / 1e3) / 1e9,
                                  "fraction_of_memcpy": kv_bytes / (ms / 1e3) / rate,
                                  "max_abs_err": err})
                except Exception as e:  # a backend that does not take this form
                    entry["error"] = str(e).splitlines()[0][:200]
                res["cases"].append(entry)
                if "us" in entry:
                    print(f"sdpa {name:5s} {form:7s} ({batch:2d}, {ctx:6d}): {entry['us']:9.1f} us "
                          f"{entry['kv_GBps']:7.0f} GB/s {entry['fraction_of_memcpy']:.3f} of copy", flush=True)
                else:
                    print(f"sdpa {name:5s} {form:7s} ({batch:2d}, {ctx:6d}): n/a ({entry['error']})", flush=True)
        del q, k, v, qg, ref
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
