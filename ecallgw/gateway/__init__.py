"""All of ecallgw's I/O: sources, store, pipeline, forwarder and sinks, operator API, metrics."""
