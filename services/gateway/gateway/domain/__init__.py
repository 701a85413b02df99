"""Pure gateway rules: what a request's status is, and who may see it."""

from gateway.domain.status import RequestView, Views, visible_to

__all__ = ["RequestView", "Views", "visible_to"]
