"""The approver directory lives in `contracts.directory`: approvals, the issuer's
re-check and the chat service must resolve identities the same way."""

from contracts.directory import Approver, Directory, DirectoryError, normalize

__all__ = ["Approver", "Directory", "DirectoryError", "normalize"]
