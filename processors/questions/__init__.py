"""LLM questions about a text, answered in one decode step from log-probabilities.

- `layout`: turns a question about a text into engine prompts: the group's shared system part,
  the text (truncated once, padded to a KV block), then the question's cue and answer prefix.
- `answers`: which answer tokens each kind scores, and how their log-probabilities become a
  result (`llm_choice`, `llm_multilabel`, `llm_score`).
- `processor`: runs every question of a window about the same texts together, text-major.
- `standalone`: the same prompts and readers outside the server (the peer benchmark).
"""
