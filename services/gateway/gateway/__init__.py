"""AgentAuth gateway: agents ask for PoAs over mTLS (`POST /issue`) and fetch them (`GET /requests/{id}`)."""
