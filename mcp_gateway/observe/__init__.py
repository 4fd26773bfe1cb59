"""What an operator sees of the running gateway: Prometheus metrics (`metrics`),
OpenTelemetry traces (`tracing`), and what the request path tells both and the access
log (`observer`)."""
