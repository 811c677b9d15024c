"""OpenAI's Batches (``/v1/batches``): a file of requests answered by the job workers."""
