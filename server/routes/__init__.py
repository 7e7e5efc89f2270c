"""The gateway's routes, one router per resource: chat, files, health (with models, metrics)."""
