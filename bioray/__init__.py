"""bioray."""
