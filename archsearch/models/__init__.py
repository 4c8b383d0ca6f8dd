"""Model builder and reference designs (registered in timm on import)."""

from .builder import build_model, check_input_size
from .columnar import ColumnarNet
from .hierarchical import HierarchicalNet
from .reference import PUBLISHED, Published, create_reference, reference_config, reference_names

__all__ = [
    "build_model",
    "check_input_size",
    "ColumnarNet",
    "HierarchicalNet",
    "PUBLISHED",
    "Published",
    "create_reference",
    "reference_config",
    "reference_names",
]
