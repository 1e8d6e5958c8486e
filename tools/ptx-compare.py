#!/usr/bin/env python3
"""Compares two directories of tensor-core PTX (the PTX test's dumps) after normalising names.

  python3 tools/ptx-compare.py OLD_DIR NEW_DIR [--registers]

Normalised: comments, the kernel's entry name (it spells the generic arguments), the numeric suffixes ILGPU gives every
function, parameter and label, and with --registers also virtual register numbers (renumbered by first use, for code
moved between methods that ILGPU numbers differently). Prints one line per file present in both, then exits 1 if any
differs.
"""
import re
import sys
from pathlib import Path


def normalise(text: str, registers: bool) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"(\.entry\s+)[^\s(]+", r"\1ENTRY", text)
    seen: dict[str, str] = {}

    def suffix(m: re.Match) -> str:
        key = m.group(0)
        if key not in seen:
            seen[key] = f"{m.group(1)}_{len(seen)}"
        return seen[key]

    text = re.sub(r"(?<![\w$])([A-Za-z_$][\w$]*?)_\d{3,}\b", suffix, text)
    if registers:
        regs: dict[str, str] = {}
        counts: dict[str, int] = {}

        def reg(m: re.Match) -> str:
            key = m.group(0)
            if key not in regs:
                prefix = m.group(1)
                counts[prefix] = counts.get(prefix, 0) + 1
                regs[key] = f"%{prefix}#{counts[prefix]}"
            return regs[key]

        text = re.sub(r"%(rd|r|f|fd|p|rs|h|hh)(\d+)\b", reg, text)
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    registers = "--registers" in sys.argv
    old, new = Path(args[0]), Path(args[1])
    differ = 0
    for f in sorted(old.glob("*.ptx")):
        g = new / f.name
        if not g.exists():
            print(f"{f.name}: only in {old}")
            continue
        same = normalise(f.read_text(), registers) == normalise(g.read_text(), registers)
        differ += not same
        print(f"{f.name}: {'identical' if same else 'DIFFERS'}")
    for g in sorted(new.glob("*.ptx")):
        if not (old / g.name).exists():
            print(f"{g.name}: only in {new}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
