"""Redaction: secrets out of every value before it reaches the store or an exporter.

Three kinds of rule, all applied to parsed values (never to JSON text, where a
pattern could match across a quote or miss an escape):

* **Keys.** A value under a secret-looking key is replaced whole, wherever the key
  is: a dict or any mapping, a ``[name, value]`` header pair, an object's attribute,
  a ``name=value`` / ``name: value`` pair in free text, a URL query parameter. Key
  names are compared in one normal form: words split at ``_``, ``-``, ``.`` and
  camelCase humps (``DBPassword`` and ``db-password`` are both ``db_password``).
* **Shapes.** Substrings shaped like a secret are replaced wherever they are: the
  major providers' keys, JWTs, PEM private keys, ``Bearer``/``Basic`` credentials,
  a URL's ``user:password@``, and the configured patterns.
* **Structure inside strings.** A string that parses as a JSON object or array (a
  tool call's arguments, a request body) is redacted as the value it carries.

Most values hold no secret, so one multi-pattern scan over the lower-cased JSON text
(for the words secret keys contain and the literals secret shapes start with)
decides whether anything else runs. Every rule has such a literal (its *hint*); a
configured pattern without one is still applied, to every value, at a cost.
"""

from __future__ import annotations

import bisect
import contextlib
import fnmatch
import functools
import itertools
import re
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ahocorasick_rs
import orjson

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z

# --- key names ---------------------------------------------------------------------

_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\W_]+")


def normalize_key(key: str) -> str:
    """A key name's normal form: lower-case words joined by ``_`` (``DBPassword``,
    ``db-password``, ``db.password`` and ``DB_PASSWORD`` are all ``db_password``)."""
    if key.isascii() and key.islower() and key.isidentifier():
        return key.strip("_")  # the common case, without the regexes
    return _SEPARATORS.sub("_", _HUMP.sub("_", key)).strip("_").lower()


def normalize_key_rule(rule: str) -> str:
    """A configured secret key in the same normal form; ``*`` (a wildcard) is kept."""
    return "*".join(_SEPARATORS.sub("_", _HUMP.sub("_", part)).lower() for part in rule.split("*"))


_HINT_CHARS = re.compile(r"[a-z0-9_\-./:+ ]{3,}")
"""Characters a hint may hold: those that JSON text never escapes and that
lower-casing bytes (ASCII only) and text agree on."""


def literal_hint(text: str) -> str | None:
    """The longest run of ``text`` usable as a hint (lower-cased), if 3+ chars long."""
    runs = _HINT_CHARS.findall(text.lower())
    return max(runs, key=len) if runs else None


def key_rule_pattern(rules: Iterable[str]) -> re.Pattern[str]:
    """One regex that fully matches a normalised key named by any rule: a rule with
    ``*`` is a glob over the whole key; a plain rule matches the key or its last
    words (``password`` matches ``db_password``, not ``passwords``)."""
    parts = []
    for rule in rules:
        if "*" in rule:
            parts.append(fnmatch.translate(rule).removeprefix("(?s:").removesuffix(r")\Z"))
        else:
            parts.append(rf"(?:.*_)?{re.escape(rule)}")
    return re.compile("|".join(f"(?:{p})" for p in parts) or r"(?!)")


def key_rule_hint(rule: str) -> str | None:
    """The longest ASCII run of a key rule's words: the JSON text of any key it matches
    (``DBPassword``, ``db-password``) holds that run in some case."""
    runs = re.findall(r"[a-z0-9]+", rule)
    return max(runs, key=len) if runs else None


# --- shapes -----------------------------------------------------------------------


class Rule:
    """One text rule: a regex, its hint (None: none), and what a match becomes."""

    __slots__ = ("hints", "regex", "replace")

    def __init__(
        self,
        regex: str,
        hints: Sequence[str | None],
        replace: Callable[[re.Match[str]], str],
    ) -> None:
        self.regex = re.compile(regex)
        self.hints = None if any(h is None for h in hints) else tuple(h for h in hints if h)
        self.replace = replace

    def applies(self, lowered: str) -> bool:
        return self.hints is None or any(h in lowered for h in self.hints)


_JSON_SAFE = re.compile(
    r"(?:[A-Za-z0-9_\-]"  # a literal
    r"|\\[.\-_]"  # an escaped literal (not \d: in text it matches any script's digits)
    r"|\[[A-Za-z0-9_\-]+\]"  # a class of those (not negated)
    r"|\{\d+(?:,\d*)?\}|[+*?|]|\((?:\?:)?|\))*"  # quantifiers, groups, alternatives
)


def json_safe(pattern: str) -> bool:
    """Whether every match of ``pattern`` is made of characters JSON text shows as they
    are (letters, digits, ``_``, ``-``, ``.``): then searching a value's JSON text finds
    exactly what searching its strings would."""
    return _JSON_SAFE.fullmatch(pattern) is not None


_SCHEMES = ("bearer", "basic", "token", "digest", "negotiate", "apikey")
_AUTH_SCHEME = rf"(?i:{'|'.join(_SCHEMES)})"
_CREDENTIALS = rf"(?<![A-Za-z0-9])({_AUTH_SCHEME}[ \t]+)[A-Za-z0-9._~+/=\-]{{8,}}"
_URL_USERINFO = r"(?<=://)([^\s/?#@:\"'<>]*):([^\s/?#@\"'<>]+)@"
_CURL_USER = r"(?<![\w-])((?:-u|--user)[ \t]+[^\s:]+:)(\S+)"
"""``curl -u user:password``."""
_NAME = r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}"
_PAIR_NAME = (
    rf"(?<![A-Za-z0-9_.\-])(?P<q>[\"']?)(?P<flag>--?)?(?P<name>{_NAME})(?P=q)"
    r"(?:[ \t]*[:=][ \t]*|(?<=[\"'])\s*,\s*(?=[\"'])|(?(flag)[ \t]+|(?!)))"
)
"""The ``name=`` / ``name:`` / ``"name":`` / ``('name', `` / ``--name `` before a value
in free text."""


def _pair_values(redacted: str) -> tuple[str, str]:
    """The value after a pair's name: quoted; else, in a URL's query, up to the next
    parameter; else to the end of the line or a ``;`` (a password may hold spaces). An
    auth scheme before it is kept."""
    quoted = r"(?P<quote>[\"'])(?:(?!(?P=quote))[^\\\n]|\\.)*(?P=quote)"
    scheme = rf"(?P<scheme>{_AUTH_SCHEME}[ \t]+)?"
    done = re.escape(redacted)
    return (
        rf"{quoted}|{scheme}(?:{done}|[^\n\r;]*[^\s;])",
        rf"{quoted}|(?:{done}|[^&#\n\r]*[^&#\s])",
    )


class Redactor:
    """Replaces secrets in values, JSON values and free text (see the module doc)."""

    def __init__(
        self,
        *,
        text: str,
        secret_keys: Sequence[str],
        secret_patterns: Sequence[str],
    ) -> None:
        self.text = text
        key_rules = [normalize_key_rule(k) for k in secret_keys]
        self._key_re = key_rule_pattern(key_rules)
        key_hints = [key_rule_hint(k) for k in key_rules]
        self.is_secret_key = functools.lru_cache(maxsize=8192)(self._is_secret_key)
        # Keys and short strings repeat across values (field names, enum-like values).
        self._redact_short = functools.lru_cache(maxsize=16384)(self._redact_string)

        self.rules: list[Rule] = [
            Rule(_URL_USERINFO, ["://"], self._userinfo),
            Rule(_CREDENTIALS, _SCHEMES, self._credentials),
            Rule(_CURL_USER, ["-u ", "--user"], self._userinfo),
        ]
        for pattern in secret_patterns:
            self.rules.append(Rule(pattern, [literal_prefix(pattern)], self._whole))
        # A pattern without a literal, made only of characters JSON never escapes, can
        # be searched for in the JSON text of a whole batch at once.
        self._raw_text_prefilters = [
            r.regex for r in self.rules if r.hints is None and json_safe(r.regex.pattern)
        ]
        self._raw_prefilters = [re.compile(p.pattern.encode()) for p in self._raw_text_prefilters]
        self._pair_re = re.compile(_PAIR_NAME)
        text_value, query_value = _pair_values(text)
        self._value_re = re.compile(text_value)
        self._query_value_re = re.compile(query_value)
        self._pair_hints = None if None in key_hints else tuple(h for h in key_hints if h)
        hints = {h for rule in self.rules if rule.hints is not None for h in rule.hints}
        hints.update(self._pair_hints or ())
        self.always = self._pair_hints is None or any(
            r.hints is None and not json_safe(r.regex.pattern) for r in self.rules
        )
        """A rule without a hint: every value must be looked at."""
        self.words = sorted(hints)
        # Which values hold a word is all a scan must tell, so a word holding another is
        # left out, and a search for the leftmost match (no overlapping ones) is enough
        # (a match never spans two values). With up to 64 words the automaton then runs
        # behind a SIMD prefilter: about six times faster than every overlapping match.
        fewest = [w for w in self.words if not any(o != w and o in w for o in self.words)]
        self.scanner = ahocorasick_rs.BytesAhoCorasick(
            [w.encode() for w in fewest],
            matchkind=ahocorasick_rs.MatchKind.LeftmostFirst,
            implementation=ahocorasick_rs.Implementation.DFA,
        )
        # The same words for one value on the caller's thread: slower than the scanner,
        # but it keeps the GIL, where the scanner's release could cost a whole switch
        # interval when other threads are busy.
        self.words_re = re.compile(trie_pattern(self.words))
        self.words_re_bytes = re.compile(self.words_re.pattern.encode())

    # --- keys ---

    def _is_secret_key(self, key: str) -> bool:
        return self._key_re.fullmatch(normalize_key(key)) is not None

    # --- free text ---

    def redact_text(self, text: str) -> str:
        """``text`` with every secret shape and every secret ``name=value`` replaced.
        Percent-encoded text (a URL's query) is also read decoded; when that shows a
        secret, the decoded text, redacted, is what is kept."""
        if "%" in text or ("+" in text and "=" in text):
            for decode in (urllib.parse.unquote_plus, urllib.parse.unquote):
                try:
                    decoded = decode(text)
                except UnicodeError:  # lone surrogates: made storable later, read as is
                    break
                if decoded != text:
                    redacted = self._redact_plain(decoded)
                    if redacted != decoded:
                        return redacted
        return self._redact_plain(text)

    def _redact_plain(self, text: str) -> str:
        if not text:
            return text
        lowered = text.lower()
        if (
            not self.always
            and self.words_re.search(lowered) is None
            and not any(p.search(text) for p in self._raw_text_prefilters)
        ):
            return text
        for rule in self.rules:
            if rule.applies(lowered):
                text = rule.regex.sub(rule.replace, text)
        if self._pair_hints is None or any(h in lowered for h in self._pair_hints):
            text = self._pairs(text)
        return text

    def _whole(self, match: re.Match[str]) -> str:
        return self.text

    def _userinfo(self, match: re.Match[str]) -> str:
        return (
            match.group(0)[: match.start(2) - match.start(0)]
            + self.text
            + match.group(0)[match.end(2) - match.start(0) :]
        )

    def _credentials(self, match: re.Match[str]) -> str:
        return match.group(1) + self.text

    def _pairs(self, text: str) -> str:
        """``text`` with the value of every secret-named pair replaced. Names are found
        first, values read after each secret one: a pair whose name is not secret
        consumes nothing (``error: password=…`` still finds ``password``)."""
        parts: list[str] = []
        pos = 0
        for match in self._pair_re.finditer(text):
            if match.start() < pos or not self.is_secret_key(match.group("name")):
                continue
            in_query = match.start() > 0 and text[match.start() - 1] in "?&"
            values = self._query_value_re if in_query else self._value_re
            value = values.match(text, match.end())
            if value is None:
                continue
            quote, scheme = value.group("quote"), value.groupdict().get("scheme")
            shown = f"{quote}{self.text}{quote}" if quote else (scheme or "") + self.text
            parts += (text[pos : value.start()], shown)
            pos = value.end()
        return "".join(parts) + text[pos:] if parts else text

    # --- values ---

    def redact_value(self, value: Any) -> Any:
        """A parsed JSON value with its secrets replaced (a new value; the input is not
        changed)."""
        if isinstance(value, str):
            return self._redact_short(value) if len(value) <= 64 else self._redact_string(value)
        if isinstance(value, dict):
            return {
                (self._redact_short(k) if isinstance(k, str) else k): (
                    self.text
                    if isinstance(k, str) and v is not None and self.is_secret_key(k)
                    else self.redact_value(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            if (
                len(value) == 2
                and isinstance(value[0], str)
                and value[1] is not None
                and self.is_secret_key(value[0])
            ):  # a header pair: ["Authorization", "Bearer …"]
                return [value[0], self.text]
            return [self.redact_value(v) for v in value]
        return value

    def _redact_string(self, text: str) -> str:
        stripped = text.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            try:
                carried = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                pass
            else:  # JSON carried in a string: redacted as the value it is
                redacted = self.redact_value(carried)
                if redacted != carried:
                    return orjson.dumps(redacted, option=_OPTS).decode()
                return text
        return self.redact_text(text)

    def suspects(self, values: Sequence[bytes]) -> list[bool]:
        """For each JSON value, whether it may hold a secret (False: it certainly does
        not). One scan over all of them: the search releases the GIL, so it is done
        once per batch rather than once per value."""
        if not values:
            return []
        if self.always:
            return [True] * len(values)
        joined = b"\x00".join(values).lower()
        flags = [False] * len(values)
        matches = self.scanner.find_matches_as_indexes(joined)
        starts = [start for _, start, _ in matches]
        if self._raw_prefilters:
            raw = b"\x00".join(values)
            starts += [m.start() for p in self._raw_prefilters for m in p.finditer(raw)]
        if starts:
            ends = list(itertools.accumulate(len(v) + 1 for v in values))
            for start in starts:
                flags[bisect.bisect_right(ends, start)] = True
        return flags

    def suspect(self, data: bytes) -> bool:
        return (
            self.always
            or self.words_re_bytes.search(data.lower()) is not None
            or any(p.search(data) for p in self._raw_prefilters)
        )

    def redact_json(self, data: bytes) -> tuple[bytes, bool]:
        """The JSON value with its secrets replaced, and whether anything was."""
        redacted = orjson.dumps(self.redact_value(orjson.loads(data)), option=_OPTS)
        return redacted, redacted != data

    def redact_repr(self, obj: object, text: str) -> str:
        """An object's ``repr``: the values of its secret-named attributes (where they
        can be read) replaced, then the text rules."""
        for name, value in _attributes(obj):
            if isinstance(value, str | bytes | int) and self.is_secret_key(name):
                for shown in sorted({repr(value), str(value)}, key=len, reverse=True):
                    if len(shown) >= 4:
                        text = text.replace(shown, self.text)
        return self.redact_text(text)


def trie_pattern(words: Iterable[str]) -> str:
    """A regex matching any of ``words``, shaped as a trie (``pass(?:phrase|w(?:d|ord))``):
    at each position only the branches that share its first character are tried, which
    makes it several times faster than a flat alternation of the words."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(trie) or r"(?!)"


def literal_prefix(pattern: str) -> str | None:
    """A literal every match of ``pattern`` contains, lower-cased, when one is plain to
    see: a literal prefix of 3+ characters (or the letters of a leading ``(?i:…)``)."""
    if pattern.startswith("(?i:"):
        body = pattern[4:].split(")", 1)[0]
        return literal_hint(body) if body.isalpha() and "|" not in body else None
    if "|" in pattern:  # alternatives at the top: no single literal to look for
        depth = 0
        for ch in pattern:
            depth += ch == "("
            depth -= ch == ")"
            if ch == "|" and depth == 0:
                return None
    prefix = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in ".-_/:+ ":
            ch, i = pattern[i + 1], i + 1  # an escaped punctuation mark is a literal
        elif ch in "\\[](){}.*+?|^$":
            if ch in "?*{" and prefix:  # the last literal is optional or repeated
                prefix = prefix[:-1]
            break
        if i + 1 < len(pattern) and pattern[i + 1] in "?*{":
            break
        prefix += ch
        i += 1
    hint = prefix.lower()
    return hint if len(hint) >= 3 and _HINT_CHARS.fullmatch(hint) else None


def _attributes(obj: object) -> list[tuple[str, Any]]:
    """An object's readable attributes (``__dict__`` and ``__slots__``), never raising."""
    found: list[tuple[str, Any]] = []
    with contextlib.suppress(TypeError):
        found.extend(vars(obj).items())
    try:
        for cls in type(obj).__mro__:
            for name in getattr(cls, "__slots__", ()):
                if isinstance(name, str) and hasattr(obj, name):
                    found.append((name, getattr(obj, name)))
    except Exception:
        pass
    return found


def rule_problem(kind: str, rule: str) -> str | None:
    """Why a configured secret key (``kind="key"``) or pattern cannot work (None: it can)."""
    if kind == "key":
        if not isinstance(rule, str) or not normalize_key_rule(rule).strip("*_"):
            return f"secret key {rule!r} names no key: use a name such as 'db_password'"
        return None
    if not isinstance(rule, str):
        return f"secret pattern {rule!r} is not a string"
    try:
        compiled = re.compile(rule)
    except re.error as exc:
        return (
            f"secret pattern {rule!r} is not a valid regex ({exc}); "
            "scope flags inline, e.g. (?i:bearer)"
        )
    if compiled.search("") is not None:
        return f"secret pattern {rule!r} matches the empty string, so it would match anywhere"
    if _anchored(rule):
        return (
            f"secret pattern {rule!r} is anchored: patterns are searched inside every "
            "string, so ^, $, \\A or \\Z would only match at a string's edge. Remove the "
            "anchor; to redact whole values, name their key in secret_keys"
        )
    return None


def _anchored(pattern: str) -> bool:
    """Whether ``pattern`` has ``^``, ``$``, ``\\A``, ``\\Z`` or ``\\z`` outside a class."""
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if not in_class and pattern[i + 1 : i + 2] in ("A", "Z", "z"):
                return True
            i += 2
            continue
        if in_class:
            if ch == "]":
                in_class = False
        elif ch == "[":
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] == "^" else 1
            if pattern[i : i + 1] == "]":
                i += 1  # a leading ] is a literal
            continue
        elif ch in "^$":
            return True
        i += 1
    return False
