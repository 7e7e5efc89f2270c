"""The chat pipeline, one room: `service.py` (`ChatService`: a validated request in, an
answer out, no HTTP), `upstream_requests.py` (the one place every upstream request is
built, and the router's session key), `long_video.py` (a long video answered in segments),
`integrate.py` and `prompts/` (joining segment answers per task), `answers.py` (the model's
text -> `structured`, times on the whole video's timeline), `stream.py` (SSE chunks and
the segments' progress lines)."""
