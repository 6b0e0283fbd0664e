"""The health authority's coordinator: risk set, PSI matching against the agency nodes, features, colour
policy, applicant checks, signed health codes and revocations (`coordinator.epoch.run_epoch`)."""
