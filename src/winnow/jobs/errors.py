"""Why a worker stops holding a piece of work before it ends."""


class JobLost(Exception):
    """Another worker holds this job now (our lease ran out)."""


class JobCancelled(Exception):
    """The job was cancelled between two chunks."""


class ShardLost(Exception):
    """Another worker holds the shard now, or its job stopped running (paused, cancelled, failed)."""
