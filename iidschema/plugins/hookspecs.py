"""Hook specifications of iidschema's single plugin manager.

All hooks of the project live on one :class:`pluggy.PluginManager` named
``"iidschema"`` so that one installed package can extend several parts of the
library (codecs today; reader/writer formats later) through one entry point.
To add a family of hooks, add ``@hookspec`` functions to this module: the
manager registers every spec found here.

Plugins mark their implementations with :data:`hookimpl` (re-exported as
``iidschema.plugins.hookimpl``)::

    from iidschema.plugins import hookimpl

    @hookimpl
    def iidschema_codecs():
        return [CodecSpec(200, "mycodec", "mypkg.codec:MyCodec", "what it does")]
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["PROJECT_NAME", "hookspec", "hookimpl", "iidschema_codecs", "iidschema_formats"]

#: The pluggy project name, shared by the markers and the manager.
PROJECT_NAME = "iidschema"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- codecs -------------------------------------------------------------------


@hookspec
def iidschema_codecs() -> list[Any]:
    """Declare the mask codecs this plugin provides.

    Return a list of :class:`iidschema.codecs.base.CodecSpec` (preferred:
    cheap declarations whose ``loader`` is imported only when the codec is
    first used, so listing codecs stays fast and free of heavy imports), or of
    ready codec objects (anything with ``id``, ``name``, ``encode`` and
    ``decode``, or a class of them), which are wrapped in a spec.

    Codec ids are uint16 values that end up in files: 0-127 are reserved for
    iidschema's built-ins, 128-32767 are claimed in the registry table of
    docs/CODECS.md, 32768-65535 are private/experimental.
    """


# --- formats (reader/writer hooks) ---------------------------------------------


@hookspec
def iidschema_formats() -> list[Any]:
    """Declare the file formats this plugin reads and/or writes.

    Return a list of :class:`iidschema.formats.registry.FormatSpec`: per
    format its name, the file extensions mapped to it, its capabilities
    (reader, writer, lazy, multi-image) and options.  Readers, writers and
    probes are named by ``"package.module:function"`` strings imported on
    first use, so declaring stays cheap.  Several plugins may declare the
    same format: readers are tried in the order of docs/FORMATS.md (plugin
    name, overridden by ``plugin_order`` in the configuration file).
    """
