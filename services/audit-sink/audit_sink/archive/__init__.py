"""The audit archive: closed segments of the log sealed into object storage under Object Lock.

`format` (pure) says what a segment and its manifest hold and how they chain;
`objects` reads and writes them (S3 with Object Lock in COMPLIANCE mode, or a
local copy of the archive for reading); `seal` cuts segments from the audit
store and writes them; `check` verifies the whole history from the archive alone.
docs/archive.md has the format and the argument.
"""
