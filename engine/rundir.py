"""The files of a run directory, named once for everyone who reads or writes them.

The worker owns the folder (it writes events.jsonl, worker.log through its
stdout, checkpoints/, adapter/); the job manager writes config.yaml before the
worker exists and STOP to ask it to stop. Nothing here imports the job manager,
so the worker does not either.
"""

CONFIG_FILE = "config.yaml"  # the RunConfig, written once at submit
STOP_FILE = "STOP"           # present = the user asked the run to stop
LOG_FILE = "worker.log"      # the worker's stdout and stderr (every rank's)
