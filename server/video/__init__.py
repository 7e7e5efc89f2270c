"""The gateway's video path, one room (docs/architecture.md#the-video-path):

    source -> clip or segments -> prepare -> forward

`service.py` (`VideoService`: a chat request's or an upload's video, from its source to
what goes upstream), `jobs.py` (the typed job a decode worker runs, and its answers),
`workers.py` (the worker processes and their queue), `forward.py` (the forward form and
its fallbacks), `segments.py` (cutting a long video into segments), `safe_fetch.py`
(https video URLs). Nothing here is imported at package load: a decode worker imports
`jobs` alone.
"""
