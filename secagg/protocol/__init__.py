"""The sans-IO protocol core: client and server state machines, no I/O."""
