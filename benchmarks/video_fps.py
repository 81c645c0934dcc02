"""Frames per second of ``deeplab segment`` on a video: decoding, the network, the overlay and encoding.

Encodes ``--frames`` consecutive CamVid frames (480x360) into an H.264 MP4 at 15 fps, then times
:func:`deeplab_resnet.inference.video.segment_video` on it (overlay MP4 and, with ``--save-labels``,
the FFV1 label video) for each model and batch size, after one untimed warm-up run on two frames.
Random weights: the speed does not depend on them. Prints frames/s end to end, the CPU model and
the load average (on a shared machine the numbers are noisy: repeat on a quiet one).

    PYTHONPATH=src python benchmarks/video_fps.py --models deeplab_v2_resnet_tiny,deeplab_v2_resnet101 --frames 12
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid" / "val"


def encode_clip(path: Path, frames: int, rate: int = 15) -> Path:
    files = sorted(CAMVID.glob("0016E5_*.png"))[:frames]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        for file in files:
            image = np.asarray(Image.open(file).convert("RGB"))
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def cpu_model() -> str:
    from deeplab_resnet.inference.cpu_features import cpu_model as read_cpu_model

    return read_cpu_model() or platform.processor() or platform.machine()


def main() -> None:
    from deeplab_resnet.inference.segmenter import Segmenter
    from deeplab_resnet.inference.video import segment_video
    from deeplab_resnet.models import create_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="deeplab_v2_resnet_tiny,deeplab_v2_resnet101")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--batch-sizes", default="1")
    p.add_argument("--native-size", action="store_true", help="no padding to 513 (the default pads, as segment does)")
    p.add_argument("--save-labels", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cpu: {cpu_model()}, torch {torch.__version__}, threads {args.threads}, device {args.device}")
    with tempfile.TemporaryDirectory() as tmp:
        clip = encode_clip(Path(tmp) / "clip.mp4", args.frames)
        for name in args.models.split(","):
            model = create_model(name, num_classes=21, convention="caffe")
            segmenter = Segmenter(model, device=args.device, pad_size=None if args.native_size else "auto")
            labels = Path(tmp) / "labels.mkv" if args.save_labels else None
            segment_video(segmenter, clip, Path(tmp) / "warm.mp4", max_frames=2)
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                start = time.perf_counter()
                result = segment_video(segmenter, clip, Path(tmp) / "o.mp4", labels, batch_size=batch)
                seconds = time.perf_counter() - start
                load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                print(f"{name} batch {batch}: {result.frames} frames in {seconds:.1f} s = {result.frames / seconds:.2f} "
                      f"frames/s (load average {load})")  # fmt: skip


if __name__ == "__main__":
    main()
