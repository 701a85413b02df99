"""`atb replay`: read-only replays of Kafka history (policy what-if, dead-letter re-drive).

The range scanner (`RangeScanner`, `TimeRange`, `RunStore`) is shared with the
other replay and trace commands: fresh consumer group per run, end offsets fixed
at start, `read_committed`, resumable. See `scan.py`.
"""

from atb.replay.errors import ReplayError, ReplayInfraError, ReplayUsageError, RunNotFoundError
from atb.replay.runs import PartitionSpan, RunPlan, RunStore, SpooledRecord
from atb.replay.scan import BatchHandler, RangeScanner, ScanResult
from atb.replay.timerange import TimeRange, parse_instant

__all__ = [
    "BatchHandler",
    "PartitionSpan",
    "RangeScanner",
    "ReplayError",
    "ReplayInfraError",
    "ReplayUsageError",
    "RunNotFoundError",
    "RunPlan",
    "RunStore",
    "ScanResult",
    "SpooledRecord",
    "TimeRange",
    "parse_instant",
]
