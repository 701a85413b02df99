"""Gateway adapters: TLS, the HTTP server, and the Kafka follower that keeps request views."""
