"""The benchmark sections `scripts/bench` runs: versus Kamal, fleet size, rollout width."""
