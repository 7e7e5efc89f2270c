"""The console commands (pyproject's [project.scripts]): arc-ask, arc-serve, arc-golden,
arc-prepare and arc-tiny-checkpoint. Each module is a thin command over the library in
vllm_plugin/ and arc_media/; nothing in the library imports from here."""
