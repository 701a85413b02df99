"""`atb trace`'s model: one request's timeline from the topics (`timeline`) and from the audit store (`audit`)."""
