"""Verify the whole archived history from the archive alone (`atb audit verify --archive URL`).

No database: every manifest in order, each segment's bytes against its
manifest's digest, the manifests' hash chain, every leaf against its row, the
Merkle roots against the signed checkpoints (signatures checked with the key
given, never one read from the archive), the witnesses' cosignatures with the
witness keys given, and, on an S3 archive, that every object is locked in
COMPLIANCE mode at least until the date its manifest names. On a versioned
bucket it checks the sealed versions (`objects.Originals`) and reports whatever
was written over them in `notices`. Checkpoints from
outside the archive (`anchors`: a trusted checkpoint file, a witness's latest)
must be covered by it and agree with it, else the archive was truncated or rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from audit_sink.adapters.signing import verify_cosignature, verify_note
from audit_sink.archive.format import ArchiveFormatError, Chain, Manifest, Segment, seq_of
from audit_sink.archive.objects import ArchiveObjects, Originals
from audit_sink.domain.checkpoint import Checkpoint, NoteError, SignedNote, VerifierKey
from audit_sink.domain.cosignature import CosignerKey
from audit_sink.domain.merkle import Frontier, leaf_hash
from audit_sink.domain.times import parse_time

__all__ = ["ArchiveReport", "verify_archive"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ArchiveReport:
    location: str
    segments: int
    leaves: int
    rows: int
    latest: Checkpoint | None
    witnessed: int
    """The largest archived tree size whose checkpoint enough of the given witnesses cosigned (0: none)."""
    problems: tuple[str, ...]
    head: str | None = None
    """SHA-256 of the newest manifest: the head of the hash chain."""
    notices: tuple[str, ...] = ()
    """On a versioned bucket: the versions and delete markers written over sealed keys, ignored (the
    sealed versions are what was checked). Not problems: nothing sealed changed."""

    @property
    def ok(self) -> bool:
        return not self.problems


def _witnesses(segment: Segment, body: str, keys: Sequence[CosignerKey]) -> int:
    """How many distinct given witnesses validly cosigned the checkpoint `body` in the segment."""
    found: set[bytes] = set()
    for text in segment.cosigned:
        try:
            note = SignedNote.parse(text)
        except NoteError:
            continue
        if note.text != body:
            continue
        for key in keys:
            try:
                verify_cosignature(note, key)
            except NoteError:
                continue
            found.add(key.key_id)
    return len(found)


def _anchor_roots(segment: Segment, before: Frontier, sizes: set[int]) -> dict[int, bytes]:
    """Roots of the tree at the anchor sizes that fall inside this segment."""
    wanted = {s for s in sizes if segment.start < s <= segment.end}
    roots: dict[int, bytes] = {}
    frontier = before
    for entry in segment.entries:
        if not wanted:
            break
        frontier = frontier.extend([leaf_hash(entry.leaf)])
        if frontier.size in wanted:
            roots[frontier.size] = frontier.root()
            wanted.discard(frontier.size)
    return roots


def verify_archive(
    archive: ArchiveObjects,
    key: VerifierKey,
    *,
    witness_keys: Sequence[CosignerKey] = (),
    threshold: int = 1,
    anchors: Sequence[tuple[str, str]] = (),
    progress: Progress | None = None,
) -> ArchiveReport:
    """Check every link of the archive; `anchors` are (source, checkpoint note) from outside it."""
    say = progress or (lambda _line: None)
    problems: list[str] = []
    trusted: list[tuple[str, Checkpoint]] = []
    for source, note in anchors:
        try:
            trusted.append((source, Checkpoint.parse(verify_note(note, key).text)))
        except NoteError as exc:
            problems.append(f"{source}: not a checkpoint signed by {key.name}: {exc}")
    sizes = {cp.size for _, cp in trusted}
    roots: dict[int, bytes] = {}
    chain = Chain(origin=key.name)
    witnessed = 0
    store = Originals(archive)  # on a versioned bucket, what was sealed: not what was written over it
    keys = store.list("manifests/")
    try:
        keys.sort(key=seq_of)
    except ArchiveFormatError as exc:
        problems.append(f"{archive.location}: {exc}")
    for mkey in keys:
        data = store.get(mkey)
        if data is None:
            problems.append(f"{mkey} is listed but cannot be read")
            continue
        try:
            manifest = Manifest.decode(data)
        except ArchiveFormatError as exc:
            problems.append(f"{mkey} is unreadable: {exc}")
            continue
        try:
            checkpoint: Checkpoint | None = Checkpoint.parse(verify_note(manifest.checkpoint, key).text)
        except NoteError:
            checkpoint = None
        segment_bytes = store.get(manifest.segment_key, manifest.segment_sha256)
        segment: Segment | None = None
        if segment_bytes is None:
            problems.append(f"segment {manifest.seq}: {manifest.segment_key} is missing")
        else:
            try:
                segment = Segment.decode(segment_bytes)
            except ArchiveFormatError as exc:
                problems.append(f"segment {manifest.seq}: {exc}")
        before = chain.frontier
        chain.link(data, manifest, segment_bytes, segment, checkpoint)
        if segment is not None and sizes:
            roots.update(_anchor_roots(segment, before, sizes))
        if (
            segment is not None
            and checkpoint is not None
            and witness_keys
            and chain.latest == checkpoint
            and _witnesses(segment, checkpoint.body(), witness_keys) >= threshold
        ):
            witnessed = checkpoint.size
        for object_key in (mkey, manifest.segment_key):
            lock = store.lock(object_key)
            if lock is None:
                continue
            promised = parse_time(manifest.retain_until)
            if lock.mode != "COMPLIANCE" or lock.retain_until is None or lock.retain_until < promised:
                problems.append(
                    f"{object_key}: not locked in COMPLIANCE mode until {manifest.retain_until} "
                    f"(the server says {lock.mode or 'no lock'} until {lock.retain_until})"
                )
        say(f"segment {manifest.seq}: leaves {manifest.start}..{manifest.end - 1} checked")
    problems += chain.finish()
    size = chain.frontier.size
    for source, cp in trusted:
        if cp.size > size:
            problems.append(f"truncated: the archive has {size} leaves; {source} commits to {cp.size} > {size}")
        elif cp.size and roots.get(cp.size) != cp.root:
            problems.append(f"history rewritten: the archive's first {cp.size} leaves do not have the root of {source}")
    if witness_keys and witnessed == 0 and chain.leaves:
        problems.append(
            f"no archived checkpoint carries cosignatures by {threshold} of the {len(witness_keys)} witnesses given"
        )
    return ArchiveReport(
        archive.location,
        len(keys),
        chain.leaves,
        chain.rows,
        chain.latest,
        witnessed,
        tuple(problems),
        chain.prev,
        tuple(dict.fromkeys(store.notices)),
    )
