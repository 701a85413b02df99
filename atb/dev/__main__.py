"""`python -m atb.dev up|down|status|tools` (the same as `atb dev ...`)."""

from atb.dev.cli import dev_app

dev_app(prog_name="atb dev")
