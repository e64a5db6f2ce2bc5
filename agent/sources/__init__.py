"""Hardware sources. Each returns CounterReadings; none imports prometheus_client."""
