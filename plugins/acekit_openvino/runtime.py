"""Importing OpenVINO, with one message saying how to install it when it is missing."""

from __future__ import annotations

from types import ModuleType


class OpenVINONotInstalledError(ImportError):
    """The OpenVINO target was used without the openvino package."""


def import_openvino(purpose: str) -> ModuleType:
    """The ``openvino`` module; :class:`OpenVINONotInstalledError` says what to install."""
    try:
        import openvino
    except ImportError as error:
        raise OpenVINONotInstalledError(
            f"the OpenVINO target needs the openvino package to {purpose}: "
            "pip install 'acekit[openvino]'"
        ) from error
    return openvino
