"""Tests with a real Docker engine: docker compose, Docker Swarm, and the deploy files."""
