"""Long, distinct prompts for the `--long` workload: a context (an email, code, a log, an
article excerpt, a support chat, meeting notes, a review) followed by a request about it.

Each text draws its own context from templates and fillers up to a target length between
LONG_MIN_TOKENS and LONG_MAX_TOKENS (by `rough_tokens`), so no two texts share more than a
sentence or two and every prompt costs its own prefill.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LONG_MIN_TOKENS = 100
LONG_MAX_TOKENS = 500
# Targets stay inside the bounds with room for the estimate's error.
_TARGET = (140, 420)

_NAMES = ["Alice", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Julia"]
_COMPANIES = ["Northwind", "Acme Cloud", "Bluefin Bank", "Kestrel Foods", "Orbit Travel"]
_DOMAINS = ["northwind", "acmecloud", "bluefinbank", "kestrelfoods", "orbittravel"]
_PRODUCTS = ["the mobile app", "the billing page", "our API", "the dashboard", "the router"]
_SERVICES = ["auth", "payments", "search", "checkout", "inventory", "gateway", "scheduler"]
_SUBJECTS = ["solar power", "the housing market", "sleep research", "urban cycling", "coral reefs"]


def rough_tokens(text: str) -> int:
    """A rough, tokenizer-free estimate: a token per digit (small models split numbers into
    digits) and one per four other characters of English."""
    digits = sum(ch.isdigit() for ch in text)
    return max(1, round(digits + (len(text) - digits) / 4))


def _fill(rng: random.Random, sentence: str, **fixed: str) -> str:
    return sentence.format(
        **fixed,
        domain=rng.choice(_DOMAINS),
        name=rng.choice(_NAMES),
        company=rng.choice(_COMPANIES),
        product=rng.choice(_PRODUCTS),
        service=rng.choice(_SERVICES),
        subject=rng.choice(_SUBJECTS),
        n=rng.randint(2, 97),
        amount=rng.randint(12, 950),
        date=rng.randint(1, 28),
        minute=rng.randint(0, 59),
        attempt=rng.randint(1, 5),
        day=rng.choice(["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
    )


def _grow(rng: random.Random, head: str, pool: list[str], tail: str, sep: str, target: int) -> str:
    """head, then sentences from the pool until the target, then tail. The pool is drawn in a
    shuffled order: a sentence comes back only once every other one has been used."""
    parts = [head]
    order: list[str] = []
    while rough_tokens(sep.join(parts) + tail) < target:
        if not order:
            order = rng.sample(pool, len(pool))
        parts.append(_fill(rng, order.pop()))
    return sep.join(parts) + tail


_EMAIL = [
    "I am writing about {product}, which has not worked properly since {day}.",
    "We were charged {amount} dollars twice on the last invoice and nobody has explained why.",
    "My colleague {name} opened ticket {n} last week but the issue is still open.",
    "Our team of {n} people depends on this every morning for the sales report.",
    "The error message says the session expired, even right after logging in.",
    "I tried clearing the cache and reinstalling, as your help page suggests, with no luck.",
    "If this is not fixed by {day} we will have to look at other providers.",
    "To be fair, your support was excellent last year and I hope it still is.",
    "Could you also confirm whether the annual plan can be paid monthly?",
    "I have attached screenshots of the problem and the exact times it happened.",
    "Our contract number is in the signature below, in case you need it.",
    "The same thing happened to two other accounts in our organisation.",
    "We rely on {product} for customer orders, so every hour of downtime costs us money.",
    "Please call me back rather than sending another automated message.",
]
_EMAIL_ASKS = [
    "Write a polite reply to this email that apologises and proposes next steps.",
    "Summarize this email in two sentences for the account manager.",
    "Is the customer likely to cancel? Answer and explain why.",
    "Draft a short internal note asking the billing team to check the charge.",
]

_CODE = [
    "    total = 0\n    for item in items:\n        total += item.price * item.quantity",
    "    if not records:\n        return None",
    "    seen = {{}}\n    for key, value in pairs:\n        seen[key] = seen.get(key, 0) + value",
    "    result = sorted(values, key=lambda v: v.score)[:{n}]",
    "    with open(path) as handle:\n        lines = handle.read().splitlines()",
    "    while queue:\n        node = queue.pop(0)\n        seen.add(node)",
    "    response = session.get(url, timeout={n})\n    data = response.json()",
    "    average = sum(window) / len(window)\n    output.append(average)",
    "    # retry up to {n} times before giving up\n    attempts += 1",
]
_CODE_ASKS = [
    "This function returns the wrong total when the list is empty. Find the bug and fix it.",
    "Add type hints and a docstring to this function.",
    "Rewrite this function in Rust with the same behaviour.",
    "Explain what this code does, step by step, and how fast it is.",
    "Write unit tests for this function that cover the edge cases.",
]

_LOG = [
    "05-{date:02d} 10:{minute:02d} INFO  {service}: request handled in {amount} ms",
    "05-{date:02d} 10:{minute:02d} WARN  {service}: connection pool at 95% ({n} of 100 in use)",
    "05-{date:02d} 10:{minute:02d} ERROR {service}: upstream timeout after {amount} ms",
    "05-{date:02d} 10:{minute:02d} INFO  {service}: retrying request (attempt {attempt})",
    "05-{date:02d} 10:{minute:02d} ERROR {service}: circuit breaker opened for 30 s",
    "05-{date:02d} 10:{minute:02d} INFO  {service}: health check passed",
    "05-{date:02d} 10:{minute:02d} WARN  {service}: slow query on the orders table",
    "05-{date:02d} 10:{minute:02d} ERROR {service}: disk usage above 90% on node {attempt}",
    "05-{date:02d} 10:{minute:02d} INFO  {service}: deployment of the new release started",
    "05-{date:02d} 10:{minute:02d} WARN  {service}: token refresh failed, falling back to cache",
]
_LOG_ASKS = [
    "What most likely caused this outage? Give the root cause and a fix.",
    "Summarize what happened in these logs for the incident report.",
    "Which service failed first, and what should the on-call engineer check?",
]

_ARTICLE = [
    "Researchers studying {subject} published new results this week.",
    "The study followed {n} sites over several years and found a steady change.",
    "Critics argue that the sample was too small to draw firm conclusions.",
    "Supporters say the findings match what practitioners have seen for a decade.",
    "Funding for work on {subject} rose by {n} percent last year.",
    "Local officials plan to discuss the report at a public meeting on {day}.",
    "The authors call for more open data so others can check the analysis.",
    "Similar projects in other countries have reported mixed outcomes.",
    "One engineer interviewed for this piece called the results encouraging but early.",
    "The team behind the study says a larger trial will start next spring.",
    "Experts not involved in the work urged caution before changing any policy.",
    "Costs remain the main obstacle for smaller towns and rural areas.",
    "A survey of {n} residents found most had never heard of the programme.",
    "Earlier reports had suggested the opposite trend in coastal regions.",
]
_ARTICLE_ASKS = [
    "Summarize this article in three bullet points.",
    "Translate the first two sentences of this article into Spanish.",
    "What are the strongest arguments on each side? Answer briefly.",
    "Write a catchy headline and a one-line teaser for this article.",
]

_CHAT = [
    "Customer: Hi, {product} keeps logging me out every few minutes.",
    "Agent: Sorry to hear that. Which device and version are you using?",
    "Customer: An Android phone, version {n}. It started after the update.",
    "Agent: Thanks. Could you try signing out everywhere and back in?",
    "Customer: I did, twice. This is the third time I contact you about it.",
    "Agent: I understand. I will escalate it to our engineers today.",
    "Customer: Honestly, this is frustrating. I pay {amount} dollars a year for this.",
    "Agent: I have added a credit to your account for the trouble.",
    "Customer: Will that stop it from happening again next week?",
    "Agent: Our engineers think a fix will ship in version {n}.",
    "Customer: Fine, but please email me when it is actually fixed.",
    "Agent: Of course. Is there anything else I can help you with today?",
]
_CHAT_ASKS = [
    "Rate how well the agent handled this conversation and suggest improvements.",
    "Write the next reply from the agent.",
    "Summarize the customer's problem and what has been tried so far.",
]

_NOTES = [
    "- {name} will send the revised budget by {day}.",
    "- The launch of {product} moves back {n} days because of the security review.",
    "- We agreed to hire two more support engineers this quarter.",
    "- {name} raised concerns about the on-call load; to be discussed next week.",
    "- Customer churn was {n} percent last month, slightly up.",
    "- Marketing needs final screenshots before the press release.",
    "- Action: {name} to book a room for the planning workshop.",
    "- Legal has not yet approved the new terms of service.",
    "- {name} demoed the new onboarding flow; feedback was positive.",
    "- The data migration finished {n} hours late but without data loss.",
    "- Open question: do we keep the free tier after the price change?",
    "- Action: {name} to write the post-mortem for last week's outage.",
]
_NOTES_ASKS = [
    "List the action items from these meeting notes with their owners.",
    "Write a short status email to the whole team based on these notes.",
    "Which decisions here are risky, and why?",
]

_REVIEW = [
    "I bought this blender {n} weeks ago after reading many reviews.",
    "The motor is powerful and crushes ice in a few seconds.",
    "Cleaning it is a pain because the blade does not come out.",
    "It is louder than my old one, loud enough to wake the kids.",
    "For {amount} dollars I expected a sturdier lid.",
    "Customer service replaced a cracked jug quickly and without questions.",
    "Smoothies come out perfectly smooth, even with frozen fruit.",
    "Overall I would buy it again, but not at full price.",
    "The manual is short and the pictures are hard to read.",
    "After a month of daily use the jug already has small scratches.",
    "My partner loves the soup setting, which heats while it blends.",
    "Delivery took {n} days longer than promised, which was annoying.",
]
_REVIEW_ASKS = [
    "Is this review positive, negative or mixed? Explain in one sentence.",
    "Extract the pros and cons from this review as two lists.",
    "Write a short reply from the shop thanking the reviewer.",
]


@dataclass(frozen=True)
class Genre:
    """A kind of context: its opening and closing (`{ref}`, `{author}` and the fillers), the
    sentences its body is drawn from, how they are joined, and requests made about it."""

    head: str
    body: list[str]
    sep: str
    tail: str
    asks: list[str]

    def write(self, rng: random.Random, ref: str, target: int) -> str:
        author = rng.choice(_NAMES)
        head = _fill(rng, self.head, ref=ref, author=author)
        tail = _fill(rng, self.tail, author=author) + "\n\n" + rng.choice(self.asks)
        return _grow(rng, head, self.body, tail, self.sep, target)


GENRES: tuple[Genre, ...] = (
    Genre(
        "From: {author}\nTo: support@{domain}.com\nSubject: {ref}\n\nHello,",
        _EMAIL,
        " ",
        "\n\nBest regards,\n{author}",
        _EMAIL_ASKS,
    ),
    Genre(
        "```python\n# {ref}\ndef process_{service}(items, records, values):",
        _CODE,
        "\n",
        "\n    return total\n```",
        _CODE_ASKS,
    ),
    Genre("Incident {ref}: logs from the production cluster.", _LOG, "\n", "", _LOG_ASKS),
    Genre("From the science desk ({ref}):", _ARTICLE, " ", "", _ARTICLE_ASKS),
    Genre("Support chat transcript {ref}:", _CHAT, "\n", "", _CHAT_ASKS),
    Genre(
        "Weekly product meeting notes ({ref}), chaired by {author}.", _NOTES, "\n", "", _NOTES_ASKS
    ),
    Genre("Review {ref}, {attempt} stars:", _REVIEW, " ", "", _REVIEW_ASKS),
)


def long_text(rng: random.Random, ref: str) -> str:
    """One long prompt: a context of its own, then a request about it; `ref` makes it unique."""
    return rng.choice(GENRES).write(rng, ref, rng.randint(*_TARGET))
