"""Real components for tests: servers on loopback, a two-node Ray cluster, bioray's CLI in a child process."""
