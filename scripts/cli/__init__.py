"""The commands of `farmctl`, one module per subject; `scripts.farmctl` parses and dispatches."""
