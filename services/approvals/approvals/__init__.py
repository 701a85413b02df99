"""The approvals service: asks the policy what a request needs, tallies votes, emits one outcome."""
