"""The request log: every /v1 and /generate call, with its timings, attempts, tokens and cost."""
