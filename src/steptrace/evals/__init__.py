"""Evaluating step outputs: scores, online checks, LLM judges, datasets built from
recorded steps, and experiments that run today's code over them."""
