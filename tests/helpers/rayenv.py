"""The environment of the session's local Ray workers (tests/conftest.py's ``local_ray``), set
before it starts: workers inherit the raylet's environment, fixed at start."""
from __future__ import annotations

# Ray Train notices a dead worker within 0.1 s; dummy S3 credentials for sweeps to an s3://
# store whose endpoint the URI names (tests/integration/test_sweep_engine.py).
RAY_WORKER_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_USAGE_STATS_ENABLED": "0",
                  "AWS_ACCESS_KEY_ID": "rbenginekey", "AWS_SECRET_ACCESS_KEY": "rb-engine-secret-42",
                  "AWS_REGION": "us-east-1"}
