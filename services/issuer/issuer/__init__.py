"""The issuer: turns a verified quorum into a signed, short-lived PoA."""
