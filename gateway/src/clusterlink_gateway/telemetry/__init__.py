"""The read-only metrics listener (``metrics:`` in gateway.yaml) and how it gathers the metrics
of every data-plane process: the families codec (pure), the channel to the workers, the TLS
context and the HTTP listener."""
