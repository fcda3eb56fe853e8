"""Paper-agnostic code shared by every reproduction: metrics, matching, data pipeline, training,
detection ops, tiling, run folders, results tables and the command line."""
