"""``dailycheckins``: the TM daily check-ins (``user,timestamp,hours,project``) → ``tm.daily_checkins``."""

from __future__ import annotations

import csv
import io
import random
from datetime import UTC, datetime, timedelta

from schemas.tm import SOURCE_COLUMNS, DailyCheckin
from sluice.registry import Dataset, register
from sluice.tables.tm import daily_checkins
from sluice.transforms.tm import RUSSIAN_MONTHS, transform_checkins

_USERS = ["ned", "jaime", "catelyn", "daenerys", "arya", "sansa", "tyrion", "cersei", "jon", "bran"]
_PROJECTS = ["bizdev", "project-00", "security", "blogideas", "infra", "hiring", "support"]
_MONTH_NAMES = {number: name for name, number in RUSSIAN_MONTHS.items()}


def generate_checkins(rows: int, rng: random.Random) -> bytes:
    """Realistic check-ins in all three timestamp formats, with a few bad rows (about 1 in 100)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SOURCE_COLUMNS)
    start = datetime(2019, 9, 1, tzinfo=UTC)
    for i in range(rows):
        moment = start + timedelta(minutes=rng.randrange(0, 60 * 24 * 120))
        style = rng.random()
        if style < 0.7:
            stamp = moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{rng.randrange(10_000):04d} UTC"
        elif style < 0.85:
            stamp = moment.strftime("%m/%d/%Y %I:%M %p")
        else:
            stamp = f"{moment.day} {_MONTH_NAMES[moment.month]} {moment.year} {moment:%H:%M}"
        row = [
            rng.choice(_USERS),
            stamp,
            f"{rng.choice([0.5, 1, 1.5, 2, 3, 4, 8]):.1f}",
            rng.choice(_PROJECTS),
        ]
        if rows >= 50 and i % 97 == 13:  # a few bad rows, each breaking one rule
            bad = (i // 97) % 4
            if bad == 0:
                row[2] = "25"
            elif bad == 1:
                row[0] = ""
            elif bad == 2:
                row[1] = "sometime last week"
            else:
                row[3] = " "
        writer.writerow(row)
    return out.getvalue().encode()


DAILY_CHECKINS = register(
    Dataset(
        name="dailycheckins",
        description="TM daily check-ins: who worked how many hours on which project, and when.",
        patterns=("*dailycheckins*.csv", "*dailycheckins*.csv.gz", "tm/dailycheckins/*"),
        source_columns=SOURCE_COLUMNS,
        model=DailyCheckin,
        transform=transform_checkins,
        table=daily_checkins,
        column_sources={"username": "user"},
        load_mode="append",
        generate=generate_checkins,
        demo_key="tm/dailycheckins/dailycheckins-demo.csv",
    )
)
