"""arc_media: the media library of arc-video-serve (numpy, PIL, PyAV and ffmpeg; no torch,
no vLLM, no gateway), used on both sides of the network: the gateway's decode workers and
the engine plugin's `arc` video loader.

    pipeline     prepare_video: a video file in, what the model sees out (PreparedVideo)
    model_inputs the model's input sizes: frames, picture size, audio length and rate
    limits       Limits for untrusted input, the errors
    ffmpeg       hardened ffmpeg children and PyAV options (allow-lists, time and resource limits)
    probe        VideoProbe: size, rotation, frame rate and count, audio codec
    plan         the frame plan, clips, reconciling frame count and audio length
    overlay      fonts and the timestamp burnt into every frame
    frames       decoded, stamped, 640x640 frames; frame_decode: the in-process PyAV decoder
    audio        the 16 kHz mono waveform made the way the authors' audio was
    prepared     the prepared container the gateway sends to the engine
    clock        stage timing for benchmarks

Import the modules themselves (`from arc_media.pipeline import prepare_video`): this file
imports nothing, so `arc_media.prepared` or `arc_media.limits` stay cheap to load.
"""
