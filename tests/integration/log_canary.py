"""A marker planted in texts sent to servers under test: no server log may ever contain it (the
log scan reads every server log of the run). Tests that send texts, above all through failures,
include it in them."""

LOG_CANARY = "zq7-canary-text-5b1e"


def canary_text(body: str) -> str:
    """`body` with the canary planted in it."""
    return f"{body} [{LOG_CANARY}]"
