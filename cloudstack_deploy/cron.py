"""Cron lines (five fields, as crontab(5) reads them), turned into the sets of values they match.

The blueprint's rules use `parse` to refuse a line that does not parse (exit 2, file:line);
the scheduled-job runner on a host is given the expanded sets, so the host needs no cron
daemon and nothing there ever parses text from the blueprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

#: How far `latest` and `following` look for a matching minute: a line such as `0 0 29 2 1`
#: (a 29 February that is a Monday) can be decades away; past this bound it is "never".
SEARCH_DAYS = 366 * 9

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_NAMES = {
    3: {m: i for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                    "nov", "dec"], start=1)},
    4: {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_MACROS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
           "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}


@dataclass(frozen=True)
class Cron:
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]        # 0 = Sunday (7 is folded into 0)
    any_day: bool                    # day of month written as *
    any_weekday: bool                # day of week written as *

    def matches(self, minute: int, hour: int, day: int, month: int, weekday: int) -> bool:
        """crontab(5): when both day fields are restricted, either may match."""
        if minute not in self.minutes or hour not in self.hours or month not in self.months:
            return False
        day_ok, weekday_ok = day in self.days, weekday % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def matches_day(self, day: date) -> bool:
        """Whether some minute of ``day`` matches (month and the two day fields)."""
        return self.matches(self.minutes[0], self.hours[0], day.day, day.month, day.isoweekday() % 7)

    def latest(self, at: datetime) -> datetime | None:
        """The newest minute at or before ``at`` that matches (``at``'s own time zone; seconds
        dropped), None when there is none within SEARCH_DAYS."""
        at = at.replace(second=0, microsecond=0)
        day = at.date()
        for _ in range(SEARCH_DAYS):
            if self.matches_day(day):
                today = day == at.date()
                for hour in reversed(self.hours):
                    if today and hour > at.hour:
                        continue
                    minutes = [m for m in self.minutes if not (today and hour == at.hour) or m <= at.minute]
                    if minutes:
                        return datetime(day.year, day.month, day.day, hour, minutes[-1], tzinfo=at.tzinfo)
            day -= timedelta(days=1)
        return None

    def following(self, at: datetime) -> datetime | None:
        """The first matching minute strictly after ``at``; None within SEARCH_DAYS."""
        start = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.date()
        for _ in range(SEARCH_DAYS):
            if self.matches_day(day):
                today = day == start.date()
                for hour in self.hours:
                    if today and hour < start.hour:
                        continue
                    minutes = [m for m in self.minutes if not (today and hour == start.hour) or m >= start.minute]
                    if minutes:
                        return datetime(day.year, day.month, day.day, hour, minutes[0], tzinfo=start.tzinfo)
            day += timedelta(days=1)
        return None


def _value(text: str, index: int) -> int:
    low, high = _FIELDS[index][1:]
    named = _NAMES.get(index, {}).get(text.lower())
    if named is not None:
        return named
    if not text.isdigit():
        raise ValueError(f"{_FIELDS[index][0]}: {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{_FIELDS[index][0]}: {value} is outside {low}-{high}")
    return value


def _field(text: str, index: int) -> tuple[int, ...]:
    low, high = _FIELDS[index][1:]
    out: set[int] = set()
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{_FIELDS[index][0]}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if span == "*":
            start, end = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            start, end = _value(a, index), _value(b, index)
            if start > end:
                raise ValueError(f"{_FIELDS[index][0]}: range {span!r} runs backwards")
        else:
            start = _value(span, index)
            end = high if slash else start
        out.update(range(start, end + 1, step))
    if index == 4:
        out = {v % 7 for v in out}
    return tuple(sorted(out))


def parse(line: str) -> Cron:
    """A five-field cron line (or @hourly, @daily, ...); ValueError naming the bad field."""
    text = _MACROS.get(line.strip().lower(), line.strip())
    parts = text.split()
    if len(parts) != 5:
        raise ValueError(f"expected five fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    sets = [_field(p, i) for i, p in enumerate(parts)]
    return Cron(*sets, any_day=parts[2] == "*", any_weekday=parts[4] == "*")  # type: ignore[arg-type]
