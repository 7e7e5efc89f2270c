"""Moved to arc_media.frame_decode;
kept until the importers move.
"""

from arc_media.frame_decode import (  # noqa: F401
    DecodeError,
    DecodeTimeout,
    decode_selected,
    first_video_stream,
    open_input,
    scan,
)
