"""The index sections of format version 1 (byte layouts: docs/INDEXES.md).

* :mod:`iidschema.index.spatial` -- packed Hilbert R-tree over segment
  bboxes: :func:`build_spatial_index`, :class:`SpatialIndex` (``search``,
  ``search_point``).
* :mod:`iidschema.index.address` -- sorted XXH3-64 hash table over IID
  addresses: :func:`build_address_index`, :class:`AddressIndex` (``lookup``,
  ``lookup_many``).

Both readers work through a ``read(offset, length) -> bytes-like`` function
over the file and read only the records a query needs.
"""

from .address import AddressIndex, build_address_index
from .spatial import SpatialIndex, build_spatial_index

__all__ = ["SpatialIndex", "build_spatial_index", "AddressIndex", "build_address_index"]
