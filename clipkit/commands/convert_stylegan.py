"""`clipkit convert stylegan SRC DST.safetensors`: a rosinality .pt or NVIDIA .pkl generator to safetensors.

The pickle is read by a restricted unpickler that runs nothing from the file; the result records the source
format and its sha256, and loads back to the same image for the same latent.
"""

from __future__ import annotations

import argparse

from clipkit.methods.stylegan.checkpoints import convert, load_generator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="clipkit convert stylegan", description=__doc__.split("\n")[0])
    ap.add_argument("src", help="a .pt (rosinality's port) or .pkl (NVIDIA stylegan2-ada / stylegan3) file")
    ap.add_argument("dst", help="the .safetensors file to write")
    args = ap.parse_args(argv)
    out = convert(args.src, args.dst)
    g = load_generator(out)
    print(f"wrote {out}: {g.size} px, style_dim {g.style_dim}, {g.num_styles} style layers")
    return 0
