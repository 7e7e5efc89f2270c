"""arc-video-serve gateway: video ingestion and an OpenAI-compatible front door to vLLM."""
