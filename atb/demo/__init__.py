"""`atb demo`: the whole stack started locally and driven through every risk tier (`run`).

Its chapters: chat approvals (`chat`), the broker and the business system (`broker`), the audit trail (`audit`).
"""
