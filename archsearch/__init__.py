"""archsearch: block-level architecture search for lightweight vision transformers.

Importing the package registers the reference designs and ``archsearch_net`` in timm.
"""

from importlib.metadata import PackageNotFoundError, version

from .config import ArchConfig, CBConfig, StageConfig, TokenizerConfig, load_config
from .errors import ArchsearchError
from .models import build_model, create_reference, reference_config, reference_names

try:  # written once, in pyproject.toml
    __version__ = version("archsearch")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ArchConfig",
    "ArchsearchError",
    "CBConfig",
    "StageConfig",
    "TokenizerConfig",
    "build_model",
    "create_reference",
    "load_config",
    "reference_config",
    "reference_names",
    "__version__",
]
