"""A body camera's clip from still faces, for the video source (`bench run --source`, docs/camera.md): each image
centred on a black frame at the camera's resolution, held for `hold_s` seconds, encoded by FFmpeg's libx264 through
PyAV (the `camera` extra) at a constant frame rate and target bit rate. Defaults: 1280x720 at 15 fps and 2 Mbit/s,
a 720p body-camera recording at "an H.264 encoder at a few megabits a second" (issue 20). Used by
tools/bodycam_clip.py, the end-to-end test and benchmarks/test_bench_video.py."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from harness.errors import UnavailableError

SIZE = (1280, 720)
FPS = 15
KBPS = 2000


def encode_clip(images: Iterable[Path], out: Path, *, size: tuple[int, int] = SIZE, fps: int = FPS,
                kbps: int = KBPS, hold_s: float = 1.0) -> int:
    """Write the clip to `out` (its suffix names the container: .mp4, .mkv); returns the frames encoded."""
    try:
        import av
    except ImportError:
        raise UnavailableError("PyAV is unavailable (pip install '.[camera]'): the clip needs libx264") from None
    from PIL import Image

    from harness.data.images import decode

    container = av.open(str(out), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt, stream.bit_rate = size[0], size[1], "yuv420p", kbps * 1000
    n = 0
    try:
        for path in images:
            im = Image.fromarray(decode(Path(path)))
            im.thumbnail(size)
            canvas = Image.new("RGB", size)
            canvas.paste(im, ((size[0] - im.width) // 2, (size[1] - im.height) // 2))
            frame = np.asarray(canvas)
            for _ in range(max(1, round(hold_s * fps))):
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                n += 1
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return n
