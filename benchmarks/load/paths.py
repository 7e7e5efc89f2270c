"""The five paths the load benchmark measures, and what each gateway path is measured
against in the same run."""

from __future__ import annotations

DIRECT = "direct"
DIRECT_RAW = "direct-raw"
UPLOAD = "gateway-upload"
DATA_URL = "gateway-data-url"
SECOND_QUESTION = "gateway-second-question"
GATEWAY_PATHS = (UPLOAD, DATA_URL, SECOND_QUESTION)
DIRECT_PATHS = (DIRECT_RAW, DIRECT)
PATHS = (*GATEWAY_PATHS, *DIRECT_PATHS)
# What each gateway path is measured against: a video the engine must decode itself
# (direct-raw) for the paths that decode, the prepared input for the one that does not.
REFERENCE = {
    UPLOAD: DIRECT_RAW,
    DATA_URL: DIRECT_RAW,
    SECOND_QUESTION: DIRECT,
}
PATH_HELP = {
    UPLOAD: "POST /v1/files (multipart upload) then a streaming chat naming the "
    "file id, through the gateway; timed from the start of the upload",
    DATA_URL: "one streaming chat with the video as a data:video/mp4 URL, through the gateway",
    SECOND_QUESTION: "a streaming chat about a file uploaded before the batch "
    "(untimed): the upload-once benefit, no decode",
    DIRECT_RAW: "the chat sent straight to vLLM with the raw video as a data:video/mp4 URL "
    "(the engine's arc loader decodes it): what a user without the gateway does",
    DIRECT: "the chat sent straight to vLLM with the video prepared beforehand, untimed "
    "(data:video/x-arc-prepared, the container the gateway forwards in container mode)",
}
