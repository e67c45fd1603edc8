"""Cost in USD from a price table shipped as data (``prices.json``), extendable at run time.

Prices are USD per million tokens. A model is looked up as given, then without a
trailing date or version suffix (``gpt-4o-2024-08-06`` → ``gpt-4o``), first under
its provider, then under any provider. Unknown models cost ``None``, not 0.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from importlib import resources

_SUFFIX = re.compile(r"(-\d{4}-?\d{2}-?\d{2}|-\d{8}|-latest|@[\w.-]+)$")


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None

    def cost_usd(
        self, input_tokens: int | None, output_tokens: int | None, cached_input_tokens: int | None
    ) -> float | None:
        if input_tokens is None and output_tokens is None:
            return None
        cached = cached_input_tokens or 0
        fresh = max((input_tokens or 0) - cached, 0)
        cached_price = (
            self.cached_input_per_mtok
            if self.cached_input_per_mtok is not None
            else self.input_per_mtok
        )
        total = (
            fresh * self.input_per_mtok
            + cached * cached_price
            + (output_tokens or 0) * self.output_per_mtok
        )
        return round(total / 1e6, 10)


_lock = threading.Lock()
_table: dict[tuple[str, str], Price] | None = None
_as_of = ""


def _load() -> dict[tuple[str, str], Price]:
    global _table, _as_of
    if _table is None:
        with _lock:
            if _table is None:
                data = json.loads(resources.files("steptrace").joinpath("prices.json").read_text())
                _as_of = data["as_of"]
                table: dict[tuple[str, str], Price] = {}
                for provider, models in data["providers"].items():
                    for model, p in models.items():
                        table[(provider, model)] = Price(
                            p["input"], p["output"], p.get("cached_input")
                        )
                _table = table
    return _table


def prices_as_of() -> str:
    """The date of the shipped price table."""
    _load()
    return _as_of


def set_price(
    provider: str,
    model: str,
    input_per_mtok: float,
    output_per_mtok: float,
    cached_input_per_mtok: float | None = None,
) -> None:
    """Add or override the price of ``provider:model`` (USD per million tokens)."""
    table = _load()
    with _lock:
        table[(provider, model)] = Price(input_per_mtok, output_per_mtok, cached_input_per_mtok)


def price_of(provider: str, model: str) -> Price | None:
    table = _load()
    candidates = [model]
    stripped = _SUFFIX.sub("", model)
    if stripped != model:
        candidates.append(stripped)
    for name in candidates:
        price = table.get((provider, name))
        if price is not None:
            return price
    for name in candidates:
        for (_, known), price in table.items():
            if known == name:
                return price
    return None


def cost_usd(
    provider: str,
    model: str,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_input_tokens: int | None = None,
) -> float | None:
    """The call's cost in USD, or None when the model's price is unknown."""
    price = price_of(provider, model)
    if price is None:
        return None
    return price.cost_usd(input_tokens, output_tokens, cached_input_tokens)
