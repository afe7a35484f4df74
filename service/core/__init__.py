"""The pure core: events, pairing and windows. Plain, synchronous, no I/O library."""
