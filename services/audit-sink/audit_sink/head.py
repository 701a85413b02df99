"""The head of the sink's log: the tree's right edge, what it last signed, what awaits a checkpoint.

The sink signs a checkpoint after every `every` new events and at least every
`interval_s` while events arrive. A count-triggered checkpoint is sealed inside
the append that reaches the count (`seal`, called in the store's transaction),
so the rows and the checkpoint covering them commit together: one commit, not
two, and never a stored checkpoint over leaves that were rolled back. A
time-triggered one (`sign`) is stored on its own.

The head signs only a tree that extends its own last checkpoint: if the stored
leaves disagree with that checkpoint, it stops signing for good (a log must
never sign two checkpoints that disagree).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from audit_sink.adapters.db import AppendResult, SealedCheckpoint
from audit_sink.adapters.signing import NoteSigner, verify_note
from audit_sink.domain import AuditRow
from audit_sink.domain.checkpoint import Checkpoint, NoteError
from audit_sink.domain.merkle import Frontier

__all__ = ["LogHead"]

log = logging.getLogger(__name__)


def _counts(_row: AuditRow) -> bool:
    return True


class LogHead:
    def __init__(
        self,
        signer: NoteSigner,
        *,
        every: int,
        interval_s: float,
        counts: Callable[[AuditRow], bool] = _counts,
    ) -> None:
        """`counts` tells the rows that call for a checkpoint (the sink's own announcements do not)."""
        self._signer = signer
        self._every = every
        self._interval_s = interval_s
        self._counts = counts
        self.frontier = Frontier()
        self.signed_size = 0
        self.pending = 0
        self.can_sign = True
        self.checkpoints = 0
        self._last_signed = time.monotonic()
        self._sealed: Frontier | None = None

    @property
    def origin(self) -> str:
        return self._signer.name

    def load(self, hashes: Sequence[bytes], notes: Sequence[str]) -> None:
        """Rebuild from the stored leaves; check them against the last stored checkpoint."""
        self.frontier = Frontier.of(hashes)
        self.pending = len(hashes)
        if not notes:
            return
        try:
            last = Checkpoint.parse(verify_note(notes[-1], self._signer.verifier).text)
        except NoteError as exc:
            log.error("audit sink: the last stored checkpoint does not verify (%s): not signing", exc)
            self.can_sign = False
            return
        if last.size > len(hashes) or Frontier.of(hashes[: last.size]).root() != last.root:
            log.error("audit sink: stored leaves disagree with checkpoint %d: not signing any more", last.size)
            self.can_sign = False
            return
        self.signed_size = last.size
        self.pending = len(hashes) - last.size

    def seal(self, first: int, hashes: tuple[bytes, ...], rows: tuple[AuditRow, ...]) -> SealedCheckpoint | None:
        """The checkpoint to store with this append, if it reaches `every` (a `Seal` for `AuditStore.append`).

        None when another writer appended in between (`first` is not our tree size): the
        tree is then caught up after the commit and signed by the next checkpoint.
        """
        self._sealed = None
        if not self.can_sign or first != self.frontier.size:
            return None
        if self.pending + sum(1 for row in rows if self._counts(row)) < self._every:
            return None
        tree = self.frontier.extend(hashes)
        self._sealed = tree
        return self._sign(tree)

    def grow(self, result: AppendResult, missed: Sequence[bytes] = ()) -> None:
        """Take in a committed append; `missed` are the leaves other writers appended just before it."""
        if missed:
            self.frontier = self.frontier.extend(missed)
            self.pending += len(missed)
        sealed, self._sealed = self._sealed, None
        if result.checkpoint is not None and sealed is not None and sealed.size == result.checkpoint.size:
            self.frontier = sealed
        else:
            self.frontier = self.frontier.extend(result.hashes)
        self.pending += sum(1 for row in result.rows if self._counts(row))
        if result.checkpoint is not None:
            self.signed(result.checkpoint)

    def due(self, *, force: bool = False) -> bool:
        """Whether to sign now: new leaves and (`force`, or `every` of them, or `interval_s` since the last)."""
        if not self.can_sign or self.frontier.size == self.signed_size:
            return False
        elapsed = time.monotonic() - self._last_signed
        return force or (self.pending > 0 and (self.pending >= self._every or elapsed >= self._interval_s))

    def sign(self) -> SealedCheckpoint:
        """A checkpoint of the current tree, to store (then `signed`)."""
        return self._sign(self.frontier)

    def signed(self, checkpoint: SealedCheckpoint) -> None:
        """`checkpoint` (of the current tree) is stored."""
        self.signed_size, self.pending, self._last_signed = checkpoint.size, 0, time.monotonic()
        self.checkpoints += 1

    def _sign(self, tree: Frontier) -> SealedCheckpoint:
        cp = Checkpoint(self._signer.name, tree.size, tree.root())
        return SealedCheckpoint(cp.size, cp.root, self._signer.sign(cp.body()).render(), datetime.now(UTC))
