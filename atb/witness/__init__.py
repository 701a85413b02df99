"""`atb witness`: a C2SP tlog-witness that cosigns the audit log's checkpoints (docs/audit.md, "Witnessed checkpoints").

Cut like the services: `domain/` (pure: what to cosign), `adapters/` (its key, its
state file), `settings.py`, `server.py` (the aiohttp app), `cli.py` (`atb witness serve|key`).
"""
