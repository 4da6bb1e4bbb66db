"""Encode shared faces into a body camera's H.264 clip for `bench run --source` (docs/camera.md, "The video source").

    python tools/bodycam_clip.py OUT.mp4 [--seconds 12] [--kbps 2000] [--fps 15] [--width 1280 --height 720]

One FairFace sample face per second (the first of each race x gender in fairface-sample/V1, in turn), each centred on
a black frame (harness/camera/clip.py). The data root is BENCH_DATA (default ../shared/data); the clip is written to
OUT only, never into the repository."""

from __future__ import annotations

import argparse
import sys
from itertools import cycle, islice
from pathlib import Path

from harness.camera.clip import FPS, KBPS, SIZE, encode_clip
from harness.paths import data_root


def faces(root: Path) -> list[Path]:
    """The first face of each race x gender folder of the FairFace sample, in name order."""
    folder = root / "fairface-sample" / "V1"
    picked = []
    for race in sorted(p for p in folder.iterdir() if p.is_dir()):
        for gender in ("Female", "Male"):
            first = next(iter(sorted(race.glob(f"*_{gender}_*.jpg"))), None)
            if first is not None:
                picked.append(first)
    return picked


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--seconds", type=int, default=12)
    p.add_argument("--kbps", type=int, default=KBPS)
    p.add_argument("--fps", type=int, default=FPS)
    p.add_argument("--width", type=int, default=SIZE[0])
    p.add_argument("--height", type=int, default=SIZE[1])
    args = p.parse_args(argv)
    pool = faces(data_root(None).path)
    if not pool:
        print(f"{data_root(None).path}: no fairface-sample/V1 faces (set BENCH_DATA)", file=sys.stderr)
        return 2
    n = encode_clip(islice(cycle(pool), args.seconds), args.out, size=(args.width, args.height), fps=args.fps,
                    kbps=args.kbps)
    print(f"{args.out}: {n} frames, {args.width}x{args.height} at {args.fps} fps, {args.kbps} kbit/s H.264")
    return 0


if __name__ == "__main__":
    sys.exit(main())
