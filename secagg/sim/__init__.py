"""The simulator's jobs, one module each: a scenario (who takes part, with what input, who drops
out when), the router that runs it (``secagg.transport.memory``, or ``secagg.sim.pool`` with the
clients on worker processes), and the report."""
