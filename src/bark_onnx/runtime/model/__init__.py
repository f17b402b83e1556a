"""The model directory and what it needs from outside: config.py (config.json), hub.py (hub ids and
the offline switch), paths.py and cache.py (the user cache, models exported on first use by the exporter a caller passes),
voices.py and voice_files.py (presets, loaded without pickle)."""
