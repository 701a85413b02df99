"""Errors of `atb policy`.

PolicyBundleError                 base (an atb.errors.AtbError): one line, never a traceback
├── PolicyBundleUsageError        bad input to fix: a key, a bundle file, a revision, a target (exit 2)
├── PolicyBuildError              `opa test` or `opa build` refused the policy (exit 1)
└── PolicyEndpointError           an OPA instance or a bundle server did not answer (exit 4)
"""

from __future__ import annotations

from atb.errors import AtbError, ExitCode

__all__ = ["PolicyBuildError", "PolicyBundleError", "PolicyBundleUsageError", "PolicyEndpointError"]


class PolicyBundleError(AtbError):
    """Base of every `atb policy` error; `exit_code` is what the CLI exits with."""

    exit_code = ExitCode.FAILED


class PolicyBundleUsageError(PolicyBundleError):
    exit_code = ExitCode.USAGE


class PolicyBuildError(PolicyBundleError):
    """The policy does not pass its tests, or OPA could not build or sign it."""


class PolicyEndpointError(PolicyBundleError):
    exit_code = ExitCode.UNAVAILABLE
