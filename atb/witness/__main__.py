"""`python -m atb.witness serve|key`: the same as `atb witness`."""

from atb.witness.cli import witness_app

witness_app()
