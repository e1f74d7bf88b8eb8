"""GhostNAS search: the command line, and Ray Tune trials chosen by Optuna samplers."""
