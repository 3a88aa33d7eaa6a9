"""The imagefolder file-name pattern: checked once, then matched against file stems under a time limit."""

from __future__ import annotations

import time

import regex

from data_manifests.errors import ManifestError
from data_manifests.walk import shown

CKPLUS_NAME_PATTERN = r"^(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)$"
"""CK+ file stems: ``S010_004_00000017`` -> subject S010, sequence 004, frame 17."""

KNOWN_GROUPS = ("subject", "sequence", "frame")
MATCH_TIMEOUT_S = 1.0
"""Longest one stem may take to match (seconds); a pattern that backtracks without end is refused."""
TOTAL_TIMEOUT_S = 15.0
"""Longest all the stems of one scan may take to match together (seconds)."""


class NamePattern:
    """A compiled file-name pattern with named groups ``subject`` (required), ``sequence`` and ``frame``.

    Matching uses the ``regex`` package's time limit: one stem may take :data:`MATCH_TIMEOUT_S` seconds and a
    whole scan :data:`TOTAL_TIMEOUT_S`; past either, :class:`ManifestError` names the pattern (a catastrophic
    pattern such as ``^(?P<subject>(a|aa)+)+$`` is refused instead of hanging).
    """

    def __init__(
        self, pattern: str, match_timeout_s: float = MATCH_TIMEOUT_S, total_timeout_s: float = TOTAL_TIMEOUT_S
    ) -> None:
        try:
            self.rx = regex.compile(pattern)
        except (regex.error, ValueError, TypeError) as exc:
            raise ManifestError(
                f"imagefolder name pattern {pattern!r} is not a valid regular expression: {exc}"
            ) from None
        groups = set(self.rx.groupindex)
        if "subject" not in groups:
            raise ManifestError(
                f"imagefolder name pattern {pattern!r} needs a named group (?P<subject>...) "
                "(subjects keep folds honest)"
            )
        unknown = groups - set(KNOWN_GROUPS)
        if unknown:
            raise ManifestError(
                f"imagefolder name pattern {pattern!r}: unknown named groups {sorted(unknown)} "
                f"(known: {', '.join(KNOWN_GROUPS)})"
            )
        self.pattern = pattern
        self.has_sequence = "sequence" in groups
        self.match_timeout_s = match_timeout_s
        self.total_timeout_s = total_timeout_s
        self.spent_s = 0.0
        self.names = 0

    def fields(self, stem: str) -> tuple[dict[str, str | None] | None, str | None]:
        """(named groups, None) for a stem the pattern takes, else (None, the reason it does not).

        A stem is not taken when the pattern does not match it, when ``subject`` is unmatched or empty, or when
        the pattern has a ``sequence`` group that is unmatched. Raises :class:`ManifestError` past a time limit.
        """
        m = self._search(stem)
        if m is None:
            return None, f"name does not match the pattern: {self.pattern}"
        groups = m.groupdict()
        for name in ("subject", "sequence") if self.has_sequence else ("subject",):
            if groups.get(name) is None:
                return None, f"name does not match the pattern: {self.pattern} (group {name!r} matched nothing)"
        if not groups["subject"]:
            return None, f"name does not match the pattern: {self.pattern} (group 'subject' matched an empty text)"
        return groups, None

    def _search(self, stem: str) -> regex.Match | None:
        left = self.total_timeout_s - self.spent_s
        limit = min(self.match_timeout_s, max(left, 0.0))
        start = time.perf_counter()
        try:
            if limit <= 0:
                raise TimeoutError
            return self.rx.search(stem, timeout=limit)
        except TimeoutError:
            if limit < self.match_timeout_s:
                raise ManifestError(
                    f"imagefolder name pattern {self.pattern!r}: matching {self.names} file names took more than "
                    f"{self.total_timeout_s:g} s in all; simplify the pattern (nested repeats such as (a+)+ "
                    "backtrack without end)"
                ) from None
            raise ManifestError(
                f"imagefolder name pattern {self.pattern!r} takes more than {self.match_timeout_s:g} s to match the "
                f"name {shown(stem)!r}; simplify the pattern (nested repeats such as (a+)+ backtrack without end)"
            ) from None
        finally:
            self.spent_s += time.perf_counter() - start
            self.names += 1
