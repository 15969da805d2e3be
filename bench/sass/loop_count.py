"""Count the SASS instructions of a kernel's hottest loop (the backward-branch range holding the
most HMMA instructions, ties to the shortest), by opcode. Usage: loop_count.py FILE.cubin KERNEL [v]
(`v` also prints the loop). Needs `cuobjdump` and `nvdisasm` (wheels `nvidia-cuda-cuobjdump`,
`nvidia-cuda-nvdisasm`) on PATH or in CUOBJDUMP / NVDISASM_PATH."""
import collections
import os
import re
import subprocess
import sys

cuobjdump = os.environ.get("CUOBJDUMP", "cuobjdump")
out = subprocess.run([cuobjdump, "-sass", "-fun", sys.argv[2], sys.argv[1]], capture_output=True, text=True, check=True).stdout
ins = []
for line in out.splitlines():
    m = re.match(r"\s*/\*([0-9a-f]{4})\*/\s+(.*?)\s*;", line)
    if m:
        ins.append((int(m.group(1), 16), m.group(2).strip()))
loops = []
for addr, txt in ins:
    t = re.search(r"BRA\s+(0x[0-9a-f]+)", txt)
    if t and int(t.group(1), 16) < addr:
        lo = int(t.group(1), 16)
        body = [x for a, x in ins if lo <= a <= addr]
        loops.append((sum("HMMA" in x for x in body), lo, addr, body))
if not loops:
    sys.exit("no loop found")
loops.sort(key=lambda x: (-x[0], x[2] - x[1]))
n, lo, hi, body = loops[0]
ops = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", x).split()[0].split(".")[0] for x in body)
print(f"loop {lo:#x}-{hi:#x}: {len(body)} instructions, {n} HMMA, {len(body) / max(n, 1):.2f} per HMMA")
print(" ".join(f"{k}:{v}" for k, v in ops.most_common()))
if len(sys.argv) > 3:
    print("\n".join(body))
