"""The three built-in targets list through the CLI, with or without their runtimes."""

from __future__ import annotations

import json
import subprocess
import sys


def test_plugins_lists_three_targets_without_their_runtime_packages() -> None:
    # openvino and tensorrt blocked: listing must not need them.
    code = (
        "import sys\n"
        "sys.modules['openvino'] = None\n"
        "sys.modules['tensorrt'] = None\n"
        "from acekit import cli\n"
        "raise SystemExit(cli.main(['plugins', '--json']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    data = json.loads(done.stdout)
    targets = {
        name for plugin in data["plugins"] for name in plugin["registers"].get("targets", [])
    }
    assert {"onnxruntime", "openvino", "tensorrt"} <= targets
    assert not data["failed"]
