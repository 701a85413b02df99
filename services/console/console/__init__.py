"""ATB console: passkey sign-in, the approver inbox, device-bound votes."""
