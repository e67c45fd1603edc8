"""``instrument(client)``: record the calls existing code makes through an LLM SDK client."""

from __future__ import annotations

from typing import TypeVar

C = TypeVar("C")


def instrument(client: C) -> C:
    """Record every call made through ``client`` inside a run as an LLM span, exactly like
    ``st.llm.chat`` calls; returns the same client, instrumented in place.

    Supports ``openai.OpenAI``/``AsyncOpenAI`` (chat completions, the Responses API,
    streamed or not) and ``anthropic.Anthropic``/``AsyncAnthropic`` (messages, streamed
    or not). Calls outside any run are made unrecorded. Idempotent.
    """
    module = type(client).__module__.split(".", 1)[0]
    if module == "openai":
        from steptrace.llm.openai import instrument_openai

        instrument_openai(client)
        return client
    if module == "anthropic":
        from steptrace.llm.anthropic import instrument_anthropic

        instrument_anthropic(client)
        return client
    raise TypeError(
        f"steptrace.instrument() does not know {type(client).__module__}."
        f"{type(client).__qualname__}: pass an openai or anthropic client"
    )
