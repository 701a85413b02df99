"""The console's adapters: store, HTTP, Kafka."""
