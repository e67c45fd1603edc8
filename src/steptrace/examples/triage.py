"""The bundled demo: a support-ticket triage workflow on the offline ``scripted:`` models.

``triage(ticket)`` classifies a ticket with an LLM, looks its order up with a tool,
drafts a reply with a second LLM and checks the draft against the support policy.
The two models are scripted: they compute their answers from the prompt, so the
same tickets give the same results in every process. Like real models they are
not always well-behaved: for some prompts the *first* answer is malformed (prose
around the JSON, a truncated object, a wrong field), fails validation and is
fixed by the step's retry. Some drafts break the policy (a refund above the limit,
a guaranteed delivery date), which fails the run for good.

``run_demo(n)`` runs the workflow over ``n`` tickets made from a dozen bundled ones
(varied by run index) — what ``steptrace demo`` does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

import steptrace as st

# Not ``__name__``: records from steptrace's own loggers (``steptrace.*``) are never
# attached to steps, and this module plays a user's code.
log = logging.getLogger("triage")

CLASSIFIER_MODEL = "scripted:triage-classifier"
DRAFTER_MODEL = "scripted:triage-drafter"
REFUND_LIMIT_USD = 250.0

Category = Literal["billing", "shipping", "refund", "technical", "account"]
Urgency = Literal["low", "normal", "high", "critical"]


class Ticket(BaseModel):
    ticket_id: str
    customer: str
    subject: str
    body: str
    order_id: str | None = None


class Classification(BaseModel):
    category: Category
    urgency: Urgency
    confidence: float = Field(ge=0, le=1)
    summary: str


class DraftReply(BaseModel):
    subject: str
    body: str
    refund_usd: float = Field(default=0.0, ge=0)
    promises: list[str] = Field(default_factory=list)


class Reply(BaseModel):
    ticket_id: str
    category: Category
    urgency: Urgency
    order_status: str | None
    subject: str
    body: str
    refund_usd: float


class PolicyViolation(Exception):
    """A drafted reply breaks the support policy; a human has to answer this ticket."""


# --- the workflow -------------------------------------------------------------------

CLASSIFIER_PROMPT = (
    "You are the triage classifier of an online shop's support desk. Read the ticket and "
    'answer with JSON only: {"category": "billing" | "shipping" | "refund" | "technical" | '
    '"account", "urgency": "low" | "normal" | "high" | "critical", "confidence": 0..1, '
    '"summary": one short sentence}.'
)

DRAFTER_PROMPT = (
    "You write replies for an online shop's support desk. Be brief and kind. Policy: "
    f"refunds up to ${REFUND_LIMIT_USD:.0f} without approval, never more than the order "
    "total; never guarantee a delivery date. Answer with JSON only: "
    '{"subject": str, "body": str, "refund_usd": number, "promises": [str]}.'
)


@st.step(retries=2, backoff=0.01, output=Classification)
def classify(ticket: Ticket) -> Classification:
    """Ask the classifier model for the ticket's category, urgency and confidence."""
    reply = st.llm.chat(
        CLASSIFIER_MODEL,
        messages=[
            {"role": "system", "content": CLASSIFIER_PROMPT},
            {"role": "user", "content": _ticket_text(ticket)},
        ],
        temperature=0.0,
        max_tokens=200,
    )
    label = Classification.model_validate_json(reply.text)
    log.info(
        "classified %s as %s/%s (confidence %.2f)",
        ticket.ticket_id,
        label.category,
        label.urgency,
        label.confidence,
    )
    return label


@st.tool
def lookup_order(order_id: str) -> dict[str, Any]:
    """The order's status, items and total from the order system (here: a small table)."""
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        return {"order_id": order_id, "found": False}
    return {"order_id": order_id, "found": True, **order}


@st.step(retries=2, backoff=0.01, output=DraftReply)
def draft_reply(ticket: Ticket, label: Classification, order: dict[str, Any] | None) -> DraftReply:
    """Ask the drafting model for a reply, given the ticket, its label and its order."""
    if order is not None and not order.get("found"):
        log.warning(
            "order %s of ticket %s not found; asking the customer to check the number",
            ticket.order_id,
            ticket.ticket_id,
        )
    context = {"ticket": ticket.model_dump(), "classification": label.model_dump(), "order": order}
    reply = st.llm.chat(
        DRAFTER_MODEL,
        messages=[
            {"role": "system", "content": DRAFTER_PROMPT},
            {"role": "user", "content": "Draft the reply. Context:\n" + json.dumps(context)},
        ],
        temperature=0.3,
        max_tokens=400,
    )
    draft = DraftReply.model_validate_json(reply.text)
    log.info("drafted a reply to %s (refund $%.2f)", ticket.ticket_id, draft.refund_usd)
    return draft


@st.step
def check_policy(draft: DraftReply, order: dict[str, Any] | None) -> dict[str, Any]:
    """Refuse a draft that refunds too much or promises what support may not promise."""
    if draft.refund_usd > REFUND_LIMIT_USD:
        raise PolicyViolation(
            f"refund of ${draft.refund_usd:.2f} exceeds the ${REFUND_LIMIT_USD:.0f} limit "
            "for automatic replies"
        )
    total = (order or {}).get("total_usd")
    if isinstance(total, int | float) and draft.refund_usd > total:
        raise PolicyViolation(f"refund of ${draft.refund_usd:.2f} exceeds the order total")
    for promise in draft.promises:
        if promise.lower().startswith("guaranteed delivery"):
            raise PolicyViolation(f"the reply promises {promise!r}: delivery dates are not ours")
    log.info("policy check passed (refund $%.2f)", draft.refund_usd)
    return {"passed": ["refund_limit", "order_total", "no_delivery_guarantee"]}


@st.workflow
def triage(ticket: Ticket) -> Reply:
    """Classify a support ticket, look up its order, draft a reply and check it."""
    label = classify(ticket)
    order = lookup_order(ticket.order_id) if ticket.order_id else None
    draft = draft_reply(ticket, label, order)
    check_policy(draft, order)
    return Reply(
        ticket_id=ticket.ticket_id,
        category=label.category,
        urgency=label.urgency,
        order_status=order.get("status") if order else None,
        subject=draft.subject,
        body=draft.body,
        refund_usd=draft.refund_usd,
    )


def _ticket_text(ticket: Ticket) -> str:
    return (
        f"Ticket {ticket.ticket_id} from {ticket.customer}\n"
        f"Order: {ticket.order_id or 'none'}\n"
        f"Subject: {ticket.subject}\n\n{ticket.body}"
    )


# --- the order system ---------------------------------------------------------------

ORDERS: dict[str, dict[str, Any]] = {
    "A-1001": {"status": "paid", "items": ["Pro plan (monthly)"], "total_usd": 29.0},
    "A-1002": {
        "status": "in_transit",
        "items": ["Trail running shoes"],
        "total_usd": 84.9,
        "carrier": "DHL",
        "eta": "in 2 business days",
    },
    "A-1003": {"status": "delivered", "items": ["Espresso machine"], "total_usd": 649.0},
    "A-1005": {
        "status": "processing",
        "items": ["Linen dress"],
        "total_usd": 189.0,
        "carrier": "UPS",
        "eta": "in 4 business days",
    },
    "A-1006": {
        "status": "delivered",
        "items": ["Water filter jug", "Filter pack (3)"],
        "total_usd": 92.5,
    },
    "A-1007": {"status": "delivered", "items": ["Standing desk"], "total_usd": 310.0},
    "A-1011": {
        "status": "delivered",
        "items": ["Noise-cancelling headphones"],
        "total_usd": 240.0,
    },
}


# --- the scripted models ------------------------------------------------------------

_KEYWORDS: dict[str, tuple[str, ...]] = {
    "refund": ("refund", "money back", "chargeback", "reimburse", "send it back"),
    "billing": ("charged", "invoice", "billing", "subscription", "vat", "payment", "receipt"),
    "shipping": ("package", "deliver", "tracking", "shipped", "arrive", "courier", "parcel"),
    "technical": ("crash", "error", "bug", "app", "upload", "export", "api", "401", "sync"),
    "account": ("password", "login", "log in", "locked out", "account", "2fa", "delete my"),
}
_URGENCY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("critical", ("chargeback", "lawyer", "fraud", "whole team")),
    ("high", ("urgent", "asap", "immediately", "wedding", "locked out", "blocked", "!!")),
    ("low", ("no rush", "whenever", "minor", "when you get a chance")),
)
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "tomorrow")


def _digest(text: str) -> bytes:
    # hashlib, not hash(): the same prompt must behave the same in every process.
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _hits(text: str, words: tuple[str, ...]) -> int:
    return sum(len(re.findall(r"\b" + re.escape(w), text)) for w in words)


LATE_ORDER_RULE = "a missing or late order is high urgency"
"""Words that, in the classifier's system prompt, make it rank late orders high."""
_LATE = ("never arrived", "missing", "hasn't changed", "still waiting", "not arrived")


def _classify_answer(prompt: str, digest: bytes, system: str = "") -> dict[str, Any]:
    text = prompt.lower()
    scores = sorted(((_hits(text, w), c) for c, w in _KEYWORDS.items()), key=lambda s: -s[0])
    (best, category), (second, _) = scores[0], scores[1]
    urgency = next((u for u, words in _URGENCY if _hits(text, words)), "normal")
    if LATE_ORDER_RULE in system.lower() and urgency in ("low", "normal") and _hits(text, _LATE):
        urgency = "high"
    confidence = 0.4 + 0.07 * (best - second) + 0.02 * best + (digest[2] % 10) / 100
    subject = re.search(r"^Subject: (.*)$", prompt, re.MULTILINE)
    return {
        "category": category if best else "technical",
        "urgency": urgency,
        "confidence": round(min(0.97, max(0.3, confidence)), 2),
        "summary": f"{category} request: {subject.group(1) if subject else 'no subject'}"[:100],
    }


def _classify_garbled(answer: dict[str, Any], kind: int) -> str:
    text = json.dumps(answer)
    if kind == 0:
        return "Sure! Here is the classification:\n" + text
    if kind == 1:
        return text[: len(text) // 2]
    return json.dumps({**answer, "category": "payments"})


NO_DATE_RULE = "offer express shipping instead of promising a date"
"""Words that, in the drafter's system prompt, keep it from promising delivery dates."""
ESCALATE_RULE = "hand refunds over the limit to a colleague"
"""Words that, in the drafter's system prompt, keep it from refunding over the limit."""


def _draft_answer(prompt: str, digest: bytes, system: str = "") -> dict[str, Any]:
    rules = system.lower()
    context = json.loads(prompt[prompt.index("{") :])
    ticket, label, order = context["ticket"], context["classification"], context["order"]
    name = ticket["customer"].split()[0]
    body_text = ticket["body"].lower()
    order_id = ticket.get("order_id")
    amount = re.search(r"\$(\d+(?:\.\d\d)?)", ticket["body"])
    refund, promises = 0.0, []
    if order is not None and not order.get("found"):
        body = (
            f"Hi {name}, I couldn't find an order numbered {order_id}. Could you check the "
            "number in your confirmation email (it starts with A-) so I can help?"
        )
    elif label["category"] == "refund":
        refund = float(amount.group(1)) if amount else float((order or {}).get("total_usd", 0))
        promises = ["refund"]
        body = (
            f"Hi {name}, I'm sorry about order {order_id}. I've refunded ${refund:.2f} to your "
            "original payment method; it shows up within 5 business days."
        )
        if refund > REFUND_LIMIT_USD and ESCALATE_RULE in rules:
            refund, promises = 0.0, []
            body = (
                f"Hi {name}, I'm sorry about order {order_id}. A colleague will approve your "
                "refund today and confirm it by email."
            )
    elif label["category"] == "billing" and ("twice" in body_text or "double" in body_text):
        refund = float(amount.group(1)) if amount else 0.0
        promises = ["refund"]
        body = f"Hi {name}, you're right: we've reversed the duplicate charge of ${refund:.2f}."
    elif label["category"] == "billing":
        body = f"Hi {name}, we've corrected the invoice and emailed you a new copy."
    elif label["category"] == "shipping":
        day = next((d for d in _DAYS if d in body_text), None)
        if day and label["urgency"] in ("high", "critical") and NO_DATE_RULE in rules:
            body = (
                f"Hi {name}, I've upgraded your order to express shipping, the fastest we "
                f"have; we'll do all we can to get it to you before {day.capitalize()}."
            )
        elif day and label["urgency"] in ("high", "critical"):
            promises = [f"guaranteed delivery by {day.capitalize()}"]
            body = (
                f"Hi {name}, I've upgraded your order to express shipping and we guarantee "
                f"it arrives by {day.capitalize()}."
            )
        else:
            status = (order or {}).get("status", "on its way").replace("_", " ")
            eta = (order or {}).get("eta", "soon")
            body = f"Hi {name}, order {order_id} is {status}; the carrier expects it {eta}."
    elif label["category"] == "technical":
        body = (
            f"Hi {name}, thanks for the details. Our engineers are looking into it; meanwhile, "
            "updating to the latest version and retrying usually helps."
        )
    else:
        body = (
            f"Hi {name}, I've sent a secure link to your email address to sort out your "
            "account. It is valid for one hour."
        )
    return {
        "subject": f"Re: {ticket['subject']}",
        "body": body,
        "refund_usd": refund,
        "promises": promises,
    }


def _draft_garbled(answer: dict[str, Any], kind: int) -> str:
    if kind == 0:
        return "```json\n" + json.dumps(answer, indent=2) + "\n```"
    if kind == 1:
        return json.dumps({k: v for k, v in answer.items() if k != "body"})
    return json.dumps({**answer, "refund_usd": f"${answer['refund_usd']:.2f}"})


class ScriptedModel:
    """A scripted responder that answers ``answer(prompt)`` as JSON, except that the first
    time it sees some prompts (one in ``flaky_every``, chosen by the prompt's hash) it
    answers ``garble(answer, kind)`` — a malformed answer that a retry fixes."""

    def __init__(
        self,
        answer: Callable[[str, bytes, str], dict[str, Any]],
        garble: Callable[[dict[str, Any], int], str],
        flaky_every: int,
    ) -> None:
        self._answer = answer
        self._garble = garble
        self._flaky_every = flaky_every
        self._seen: dict[bytes, int] = {}
        self._lock = threading.Lock()

    def __call__(self, messages: list[dict[str, Any]], **params: Any) -> str:
        prompt = str(messages[-1]["content"])
        system = str(messages[0]["content"]) if messages[0].get("role") == "system" else ""
        digest = _digest(prompt)
        with self._lock:
            if len(self._seen) > 100_000:  # bounded memory in a long-lived process
                self._seen.clear()
            seen = self._seen.get(digest, 0)
            self._seen[digest] = seen + 1
        answer = self._answer(prompt, digest, system)
        if seen == 0 and digest[0] % self._flaky_every == 0:
            return self._garble(answer, digest[1] % 3)
        return json.dumps(answer)


def register_models() -> None:
    """(Re)register the demo's two scripted models, forgetting the prompts they saw."""
    st.llm.script(
        CLASSIFIER_MODEL.split(":", 1)[1], ScriptedModel(_classify_answer, _classify_garbled, 4)
    )
    st.llm.script(DRAFTER_MODEL.split(":", 1)[1], ScriptedModel(_draft_answer, _draft_garbled, 5))


# --- the bundled tickets ------------------------------------------------------------

TICKETS: tuple[dict[str, str | None], ...] = (
    {
        "subject": "Charged twice this month",
        "body": "Hi, I was charged twice for my subscription this month ($29.00 each time). "
        "Can you fix the invoice?",
        "order_id": "A-1001",
    },
    {
        "subject": "Where is my package?",
        "body": "I ordered running shoes ten days ago and the tracking page hasn't changed "
        "since Monday. Has it shipped at all?",
        "order_id": "A-1002",
    },
    {
        "subject": "Espresso machine arrived broken - I want my money back",
        "body": "The machine arrived with a cracked water tank. I don't want a replacement, "
        "I want a refund.",
        "order_id": "A-1003",
    },
    {
        "subject": "App crashes when I upload a photo",
        "body": "Every time I upload a profile photo the app crashes with an error. "
        "iPhone 13, latest version. No rush.",
        "order_id": None,
    },
    {
        "subject": "Locked out after password reset",
        "body": "I reset my password and now I'm locked out of my account, the login page "
        "says my 2FA code is invalid. Urgent, I need my invoices today.",
        "order_id": None,
    },
    {
        "subject": "URGENT: dress needed for a wedding on Saturday",
        "body": "My dress still hasn't shipped and I need it delivered before the wedding "
        "on Saturday!! Please help.",
        "order_id": "A-1005",
    },
    {
        "subject": "Missing item in my order",
        "body": "The filter pack was missing from the parcel. Please refund the $18.50 for it.",
        "order_id": "A-1006",
    },
    {
        "subject": "Wrong VAT number on invoice",
        "body": "Our invoice shows an old VAT number for the company. Could you send a "
        "corrected receipt when you get a chance?",
        "order_id": "A-1007",
    },
    {
        "subject": "Order never arrived",
        "body": "My parcel never arrived and the courier says they have no tracking for it.",
        "order_id": "A-9999",
    },
    {
        "subject": "Data export failing for the whole team",
        "body": "The API export fails with error 401 since this morning, using key "
        "sk-demo-4f9a2c7e1b8d6f3a0c5e. The whole team is blocked!!",
        "order_id": None,
    },
    {
        "subject": "Please delete my account",
        "body": "I'd like to delete my account and all my data. Minor thing: please "
        "confirm by email.",
        "order_id": None,
    },
    {
        "subject": "Refund now or I file a chargeback",
        "body": "The headphones stopped working after a week. Refund the $240 today or I "
        "will file a chargeback with my bank.",
        "order_id": "A-1011",
    },
)

CUSTOMERS = (
    "Ana Lima",
    "Ben Okafor",
    "Chloé Martin",
    "Dmitri Ivanov",
    "Emma Schulz",
    "Farah Haddad",
    "Grace Kim",
)


def demo_tickets(count: int) -> list[Ticket]:
    """``count`` tickets: the bundled ones in turn, each with its own id and customer
    (and, every other round, a follow-up line), the same list every time."""
    tickets = []
    for i in range(count):
        template = TICKETS[i % len(TICKETS)]
        body = str(template["body"])
        if (i // len(TICKETS)) % 2 == 1:
            body += "\n\nFollowing up on my earlier message."
        tickets.append(
            Ticket(
                ticket_id=f"T-{1001 + i}",
                customer=CUSTOMERS[i % len(CUSTOMERS)],
                subject=str(template["subject"]),
                body=body,
                order_id=template["order_id"],
            )
        )
    return tickets


def run_demo(runs: int = 20) -> list[st.RunResult]:
    """Run ``triage`` over ``runs`` demo tickets, one run each; failed runs included."""
    register_models()
    return [st.run(triage, ticket) for ticket in demo_tickets(runs)]


register_models()

__all__ = [
    "Classification",
    "DraftReply",
    "PolicyViolation",
    "Reply",
    "Ticket",
    "check_policy",
    "classify",
    "demo_tickets",
    "draft_reply",
    "lookup_order",
    "register_models",
    "run_demo",
    "triage",
]
