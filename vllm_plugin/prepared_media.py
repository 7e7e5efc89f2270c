"""Moved to arc_media.prepared;
kept until the importers move.
"""

from arc_media.prepared import (  # noqa: F401
    FORMAT,
    JPEG_QUALITY,
    MANIFEST,
    MAX_FRAME_BYTES,
    MAX_MANIFEST_BYTES,
    PREPARED_MIME,
    VERSION,
    PreparedMedia,
    PreparedMediaError,
    decode,
    encode,
    is_prepared,
)
