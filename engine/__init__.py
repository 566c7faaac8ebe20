"""The engine: loads an SD3 pipeline, applies the precision policy, runs it step by step.

Importing this package must stay cheap and torch-free: the scheduler imports its plain data
types (``engine.config``, ``engine.job``, ``engine.ipc``) without loading torch.
"""

from engine.import_noise import quiet_torchao_import

quiet_torchao_import()
