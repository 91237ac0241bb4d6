"""iidschema: the ``.iid`` segmentation file format.

Per-image lists of binary segment masks, each placed by a bounding box and
labelled by an IID (a ``domain`` and an ``address``, raw bytes), with groups,
JSON metadata and a lookup table that makes lazy, selective loading possible.

>>> import iidschema
>>> f = iidschema.IIDFile()                       # doctest: +SKIP
>>> f.add(b"tree", b"wordnet", (0, 0, 2, 2), [[1, 0], [1, 1]], group="sys")
>>> f.save("example.iid")
>>> with iidschema.open("example.iid") as g:
...     g.at(0, 1)
"""

from .errors import (
    IIDChecksumError,
    IIDCodecError,
    IIDError,
    IIDFormatError,
    IIDLimitError,
    IIDPluginError,
    IIDVersionError,
)
from .columnar import MaskColumns
from .iidfile import DEFAULT_VERSION, IIDFile, open
from .model import IID, Entry, Region, Regions, Segment
from .schema import SUPPORTED_VERSIONS
from . import formats  # callable: iidschema.formats() lists the formats (see formats/__init__.py)
from .formats import read, write

__version__ = "0.1.0"

__all__ = [
    "IIDFile",
    "open",
    "IID",
    "Entry",
    "Region",
    "Regions",
    "Segment",
    "MaskColumns",
    "DEFAULT_VERSION",
    "SUPPORTED_VERSIONS",
    "read",
    "write",
    "formats",
    "IIDError",
    "IIDFormatError",
    "IIDVersionError",
    "IIDChecksumError",
    "IIDCodecError",
    "IIDLimitError",
    "IIDPluginError",
    "__version__",
]
