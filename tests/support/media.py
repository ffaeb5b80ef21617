"""Looking at recordings as a person would: ffprobe's reading of a video, and the ffmpeg processes of a
desktop. Imports nothing from Django."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    width: int
    height: int
    duration: float
    frames: int


def ffprobe(path: Path) -> VideoInfo:
    """Return what ffprobe reads in the video at ``path`` (decoding every frame to count them)."""
    out = subprocess.run(
        [
            "ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
            "-show_entries", "stream=codec_name,width,height,nb_read_frames:format=duration",
            "-of", "json", str(path),
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    data = json.loads(out)
    stream = data["streams"][0]
    return VideoInfo(
        codec=stream["codec_name"],
        width=int(stream["width"]),
        height=int(stream["height"]),
        duration=float(data["format"]["duration"]),
        frames=int(stream["nb_read_frames"]),
    )


def ffmpeg_recorders(display: str | None = None) -> list[int]:
    """Return the pids of ffmpeg processes grabbing an X display (``display``, e.g. ":3", or any)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state == "Z" or not argv or not argv[0].endswith(b"ffmpeg") or b"x11grab" not in argv:
            continue
        if display is None or display.encode() in argv:
            found.append(int(entry.name))
    return found
