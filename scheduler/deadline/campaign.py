"""A campaign's deadline as queue.yaml gives it, and its row in sched_campaigns.

    campaign: nsmc4             # optional; else the queue file's name without .yaml
    deadline: 2026-12-10T09:00:00+09:00   # an ISO time with its zone, or a duration (48h) from
                                          # the campaign's first submit
    deadline_policy: act        # act (default): protect the deliverables; warn: only report
    deadline_margin: 0.1        # share of the time left to keep spare (default 10%)

Submitting the file again updates the deadline, policy and margin; a duration keeps counting
from the first submit. A changed deadline is judged afresh (the policy stops acting until the
forecast says it must).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, select

from ..store.schema import campaigns

POLICIES = ("act", "warn")
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    deadline_text: str | None = None  # as written
    deadline_at: datetime | None = None  # a time (naive UTC)
    deadline_after_s: float | None = None  # or a duration from the first submit
    policy: str = "act"
    margin: float = DEFAULT_MARGIN

    def deadline(self, first_submit_at: datetime) -> datetime | None:
        if self.deadline_at is not None:
            return self.deadline_at
        if self.deadline_after_s is not None:
            return first_submit_at + timedelta(seconds=self.deadline_after_s)
        return None


def parse_deadline(value: Any) -> tuple[datetime | None, float | None]:
    """(time as naive UTC, None) or (None, seconds from the first submit). Raises ValueError."""
    from pipeline.util import parse_duration

    if isinstance(value, datetime):
        return _utc(value), None
    if isinstance(value, date):
        raise ValueError(f"{value} is a date; give a time with its zone (e.g. {value}T09:00:00+09:00)")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{value!r} is not a time or a duration")
    text = str(value).strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is not None:
        return _utc(when), None
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(f"'{text}' is neither an ISO time with its zone (2026-12-10T09:00:00+09:00) nor a "
                         "duration (25s, 90m, 48h)") from None
    if seconds is None or seconds <= 0:
        raise ValueError(f"'{text}': a deadline's duration must be more than 0")
    return None, seconds


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"{when.isoformat()} has no time zone; write it with one (+09:00, Z) so it means one moment")
    return when.astimezone(timezone.utc).replace(tzinfo=None)


def store_campaign(conn: Connection, spec: CampaignSpec, now: datetime) -> None:
    """Insert or update the campaign's row (at submit, in the submit's transaction)."""
    row = conn.execute(select(campaigns).where(campaigns.c.name == spec.name)).first()
    first = row.first_submit_at if row is not None else now
    values = dict(deadline=spec.deadline(first), deadline_text=spec.deadline_text, policy=spec.policy,
                  margin=spec.margin, updated_at=now)
    if row is None:
        conn.execute(campaigns.insert().values(name=spec.name, first_submit_at=now, engaged_at=None, **values))
        return
    if row.deadline != values["deadline"] or row.policy != spec.policy:
        values["engaged_at"] = None  # judged afresh
    conn.execute(campaigns.update().where(campaigns.c.name == spec.name).values(**values))


def campaigns_with_deadlines(conn: Connection) -> list:
    return conn.execute(select(campaigns).where(campaigns.c.deadline.is_not(None))
                        .order_by(campaigns.c.deadline, campaigns.c.name)).all()


def campaign_row(conn: Connection, name: str):
    return conn.execute(select(campaigns).where(campaigns.c.name == name)).first()
