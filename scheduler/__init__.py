"""The scheduler: replicas (one worker process each), queues, dispatch, job records.

It speaks plain dataclasses (engine.job) and never imports torch: the engine runs in the workers.
"""
