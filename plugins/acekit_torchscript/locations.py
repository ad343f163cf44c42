"""Source locations of TorchScript nodes, as the ``file:line`` the user recognises.

A traced node carries the Python stack at the time it was recorded; a scripted node
carries the position of its expression, and the call sites of the methods the walker
went through give the frames around it. Of all these frames the innermost one outside
PyTorch's own package is the user's line (``self.conv(x)`` rather than the
``F.conv2d`` inside ``nn.Conv2d``); when every frame is inside PyTorch the innermost
one is kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import torch

from acekit_torchscript.jit import source_text

_STACK_LINE = re.compile(r"^(?P<file>.+)\((?P<line>\d+)\): \S+$")
_COMMENT = re.compile(r" # (?P<file>[^#]+?):(?P<line>\d+):\d+$")
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep

Frame = tuple[str, int]


def node_frames(node: torch._C.Node) -> list[Frame]:
    """The ``(file, line)`` frames recorded for ``node``, innermost first."""
    frames: list[Frame] = []
    for line in source_text(node).splitlines():
        match = _STACK_LINE.match(line.strip())
        if match:
            frames.append((match["file"], int(match["line"])))
    if frames:
        return frames
    first_line = str(node).split("\n", 1)[0]
    match = _COMMENT.search(first_line)
    if match:
        return [(match["file"].strip(), int(match["line"]))]
    return []


def is_library_frame(frame: Frame) -> bool:
    """Whether ``frame`` lies in PyTorch's own code or in no real file (``<string>``)."""
    file = frame[0]
    return file.startswith(_TORCH_DIR) or file.startswith("<")


def choose_location(frames: Iterable[Frame]) -> str | None:
    """``file:line`` of the innermost frame outside PyTorch, else of the innermost one."""
    first: Frame | None = None
    for frame in frames:
        if first is None:
            first = frame
        if not is_library_frame(frame):
            return f"{frame[0]}:{frame[1]}"
    return None if first is None else f"{first[0]}:{first[1]}"


def locate(node: torch._C.Node, call_sites: Sequence[torch._C.Node]) -> str | None:
    """The location of ``node`` reached through ``call_sites`` (outermost first)."""
    frames = node_frames(node)
    if not frames or all(is_library_frame(frame) for frame in frames):
        for site in reversed(call_sites):
            frames.extend(node_frames(site))
    return choose_location(frames)
