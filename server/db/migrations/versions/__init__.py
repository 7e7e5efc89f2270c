"""The migrations, one file each, applied in order of their `down_revision` links."""
