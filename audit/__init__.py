"""The auditor: replays a run from its files alone and gives a verdict per item, trusting neither the
coordinator nor the nodes."""
