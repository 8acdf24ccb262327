#!/usr/bin/env python3
"""Instruction count of the main loop's fast path of a decode kernel, from its SASS (no GPU).

  python3 scripts/sass-path.py [KERNEL_REGEX] [--cubin FILE] [--list]

Without --cubin, compiles cuda/attention/paged_decode.cu for sm_90 (nvcc from scripts/cuda-env.sh
or PATH). KERNEL_REGEX picks the function (default: the KIVI-2 kernel at head dim 128,
`qdecode_kernelILi128ELi4E`; F = 0 f16, 2 int8, 3 fp8, 4 KIVI-2, 5 KIVI-4). The main loop is the
longest conditional backward branch; the walk follows it once: into a block that issues the
copies (LDGSTS; of two such blocks, the one with fewer row predicates, i.e. a whole stage), past
the other branches' guarded blocks (score stores, rescale) and, at a branch whose one side clamps
KIVI values (HMNMX2), the other side. --list prints the instructions walked. Needs cuobjdump (CUDA toolkit; on a machine without it: `pip download
nvidia-cuda-cuobjdump` and unpack its wheel). Prints the count and the opcode histogram: the
figure the KIVI-2 steps of docs/attention.md were tuned with (890 -> 799 -> 712 per 32-token
stage).
"""
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

def main():
    args = sys.argv[1:]
    cubin = None
    listing = "--list" in args
    if listing:
        args.remove("--list")
    if "--cubin" in args:
        i = args.index("--cubin")
        cubin = args[i + 1]
        del args[i:i + 2]
    pattern = args[0] if args else r"qdecode_kernelILi128ELi4E"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cuobjdump = shutil.which("cuobjdump") or "/usr/local/cuda/bin/cuobjdump"
    if not os.path.exists(cuobjdump) and shutil.which("cuobjdump") is None:
        sys.exit("sass-path: cuobjdump not found (see the docstring)")
    if cubin is None:
        nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
        cubin = os.path.join(tempfile.mkdtemp(), "paged_decode.cubin")
        subprocess.run([nvcc, "-DKVCACHE_HAS_CUDA=1", "-I" + os.path.join(root, "cuda"),
                        "-I" + os.path.join(root, "include"), "-O2", "-DNDEBUG", "-arch=sm_90",
                        "--expt-relaxed-constexpr", "-std=c++20", "-cubin", "-x", "cu",
                        os.path.join(root, "cuda/attention/paged_decode.cu"), "-o", cubin],
                       check=True)
    sass = subprocess.run([cuobjdump, "-sass", cubin], check=True, capture_output=True,
                          text=True).stdout
    ins, on = [], False
    for line in sass.split("\n"):
        if "Function :" in line:
            on = re.search(pattern, line) is not None
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?);", line) if on else None
        if m:
            ins.append((int(m.group(1), 16), m.group(2)))
    if not ins:
        sys.exit(f"sass-path: no function matches {pattern}")
    loop = None
    for a, t in ins:
        m = re.search(r"^@!?P\d BRA.*?(0x[0-9a-f]+)", t)
        if m and int(m.group(1), 16) < a and (loop is None or a - int(m.group(1), 16) > loop[0]):
            loop = (a - int(m.group(1), 16), int(m.group(1), 16), a)
    if loop is None:
        sys.exit("sass-path: no loop")
    _, lo, hi = loop
    body = [(a, t) for a, t in ins if lo <= a <= hi]
    index = {a: i for i, (a, _) in enumerate(body)}
    clamps = lambda s, e: sum(1 for a, t in body if s <= a < e and "HMNMX2" in t)
    hist, n, pc = collections.Counter(), 0, lo
    while pc <= hi:
        t = body[index[pc]][1]
        if listing:
            print(f"{pc:#06x} {t}")
        hist[re.sub(r"^@!?U?P\w+\s+", "", t).split()[0]] += 1
        n += 1
        nxt = body[index[pc] + 1][0] if index[pc] + 1 < len(body) else hi + 1
        m = re.match(r"(@!?P\d\s+)?BRA(\.DIV)?\s+(?:UR\d+, |!?P\d, )?(0x[0-9a-f]+)", t)
        if m and not m.group(2):
            tgt = int(m.group(3), 16)
            if tgt < pc:
                break
            if not m.group(1):
                pc = tgt
                continue
            count = lambda s_, e_, op: sum(1 for a, t in body if s_ <= a < e_ and op in t)
            if tgt > nxt and count(nxt, tgt, "LDGSTS") > 0:  # a copy block: into it
                span = (tgt, tgt + (tgt - nxt))
                if count(*span, "LDGSTS") > 0:  # two: the whole-stage one
                    pc = tgt if count(*span, "ISETP.LT") < count(nxt, tgt, "ISETP.LT") else nxt
                else:
                    pc = nxt
                continue
            fall, taken = clamps(nxt, min(tgt, nxt + 0x3000)), clamps(tgt, tgt + 0x3000)
            if fall > 20 or taken > 20:
                pc = tgt if fall > taken else nxt
            else:
                pc = tgt if tgt - pc < 0x800 else nxt
            continue
        pc = nxt
    print(f"{pattern}: {n} instructions on the loop's fast path")
    print(" ".join(f"{k}:{v}" for k, v in hist.most_common()))

if __name__ == "__main__":
    main()
