"""The GhostNet design space: blocks, architecture values and files, reference models."""

from space.checks import ArchitectureError, UserError
from space.ghostnet import Architecture, Block, GhostNet, ghostnet_arch
from space.io import (
    ArchLike,
    architecture_from_dict,
    load_architecture,
    read_json_file,
    resolve_architecture,
    save_architecture,
)
from space.layers import make_divisible
from space.mobilenetv3 import MBBlock, MobileNetV3, MobileNetV3Arch
from space.registry import Published, create_architecture, list_models, published

__all__ = [
    "ArchitectureError", "UserError", "make_divisible", "Architecture", "Block", "GhostNet", "ghostnet_arch",
    "ArchLike", "architecture_from_dict", "load_architecture", "read_json_file",
    "resolve_architecture", "save_architecture", "MBBlock", "MobileNetV3", "MobileNetV3Arch",
    "Published", "create_architecture", "list_models", "published",
]
