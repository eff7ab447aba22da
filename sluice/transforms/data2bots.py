"""Data2bots: typing of the staging files and the analytics rules, as pure functions on DataFrames.

Every rule of the analytics tables, written down once (``as_of`` is the ingestion date; the README's Data2bots
table repeats them with the reason for each reading):

- **scope**: only orders placed on or before ``as_of`` count, and only the shipments of those orders; a re-run for an
  earlier day sees what that day could have seen.
- **working day**: ``day_of_the_week_num`` 1..5 (1 = Monday … 7 = Sunday) and not a listed public holiday.
- **public holiday** (for orders): a weekday (1..5) that is not a working day; a holiday on a weekend counts not.
- **past year** (``agg_public_holiday``, "every month, for the past year"): the twelve calendar months ending with
  ``as_of``'s month, that month counted up to ``as_of``. ``tt_order_hol_<mon>`` is the one month of that window
  with that name (``as_of`` 2022-06-30: Jul–Dec 2021 and Jan–Jun 2022). Leap days are ordinary days of February.
- **late shipment**: ``shipment_date >= order_date + 6 days`` and ``delivery_date`` is null.
- **early shipment**: ``shipment_date < order_date + 6 days`` (delivered or not).
- Neither early nor late: not shipped yet; or shipped six or more days after the order and already delivered.
- **undelivered item**: a shipment row with ``shipment_date`` and ``delivery_date`` both null and
  ``order_date + 15 days <= as_of``. An order without a shipment row counts in no shipment figure (the run's notes
  say how many are 15 days old: ``sluice.data2bots.orders_without_shipment``).
- **best performing product**: the most review points (tie: lowest id); ``pct_<n>_star_review`` = n × (its n-star
  reviews) / its points × 100, two decimals rounded half-up (``percent``); ``most_ordered_day``: its day with the
  most orders (tie: earliest).
- ``pct_early_shipments`` / ``pct_late_shipments``: the split of that product's early-or-late shipments
  (early / (early + late) and late / (early + late), × 100, two decimals, adding up to exactly 100). Shipments that
  are neither are in neither numerator nor denominator. No early and no late shipment: both 0 (the columns are
  ``NOT NULL`` in the schema its users query; 0 + 0 says "nothing to split").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal

import pandas as pd

from schemas.data2bots import FIRST_DAY, LAST_DAY
from sluice.tables.data2bots import MONTH_COLUMNS, STAR_COLUMNS
from sluice.transforms.values import iso_dates, whole_numbers

LATE_AFTER = dt.timedelta(days=6)
UNDELIVERED_AFTER = dt.timedelta(days=15)


# --- staging files --------------------------------------------------------------------------------------


_ids = whole_numbers
_dates = iso_dates


def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values.astype("str").str.strip(), errors="coerce").astype("float64")


def transform_orders(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "order_id": _ids(raw["order_id"]),
            "customer_id": _ids(raw["customer_id"]),
            "order_date": _dates(raw["order_date"]),
            "product_id": _ids(raw["product_id"]),
            "unit_price": _numbers(raw["unit_price"]),
            "quantity": _ids(raw["quantity"]),
            "total_price": _numbers(raw["total_price"]),
        },
        index=raw.index,
    )


def transform_reviews(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"review": _ids(raw["review"]), "product_id": _ids(raw["product_id"])}, index=raw.index
    )


def transform_shipments(raw: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "shipment_id": _ids(raw["shipment_id"]),
            "order_id": _ids(raw["order_id"]),
            "shipment_date": _dates(raw["shipment_date"]),
            "delivery_date": _dates(raw["delivery_date"]),
        },
        index=raw.index,
    )


# --- dimensions -----------------------------------------------------------------------------------------


def dim_dates(start: dt.date, end: dt.date, holidays: Iterable[dt.date]) -> pd.DataFrame:
    """Every calendar day from ``start`` to ``end``; weekends and listed holidays are not working days."""
    days = pd.date_range(start, end, freq="D")
    off = set(holidays)
    weekday = days.dayofweek + 1
    return pd.DataFrame(
        {
            "calendar_dt": pd.Series(days.date, dtype=object),
            "year_num": pd.array(days.year, dtype="Int64"),
            "month_of_the_year_num": pd.array(days.month, dtype="Int64"),
            "day_of_the_month_num": pd.array(days.day, dtype="Int64"),
            "day_of_the_week_num": pd.array(weekday, dtype="Int64"),
            "working_day": pd.array(
                [w <= 5 and d not in off for w, d in zip(weekday, days.date, strict=True)], dtype="boolean"
            ),
        }
    )


def public_holidays(dates: pd.DataFrame) -> set[dt.date]:
    """Weekdays (1..5) that are not working days."""
    mask = (dates["day_of_the_week_num"] <= 5) & ~dates["working_day"].astype(bool)
    return set(dates.loc[mask, "calendar_dt"])


# --- analytics ------------------------------------------------------------------------------------------


# Staging may come compacted (``sluice.data2bots.read_staging``): one row per distinct combination of the columns the
# rules read, with ``n``, how many staging rows it stands for; shipments then come joined to their order (its
# ``order_date`` and ``product_id``, no ``order_id``) and say whether they were ``delivered`` instead of when. Every
# rule counts rows through ``weights``, so a compacted frame gives the same figures as the rows it stands for.
COUNT = "n"


def weights(frame: pd.DataFrame) -> pd.Series:
    """How many staging rows each row stands for: its ``n``, or one each."""
    if COUNT in frame:
        return frame[COUNT].astype("int64")
    return pd.Series(1, index=frame.index, dtype="int64")


def rows(frame: pd.DataFrame) -> int:
    """How many staging rows ``frame`` stands for."""
    return int(weights(frame).sum())


def _counted(frame: pd.DataFrame, mask: pd.Series) -> int:
    return int(weights(frame)[mask].sum())


def _undelivered(frame: pd.DataFrame) -> list[bool]:
    if "delivered" in frame:
        return [not bool(d) for d in frame["delivered"]]
    return [d is None or pd.isna(d) for d in frame["delivery_date"]]


def orders_until(orders: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    return orders[orders["order_date"].map(lambda d: d <= as_of)]


def past_year(as_of: dt.date) -> tuple[dt.date, dt.date]:
    """The twelve calendar months ending with ``as_of``'s month: (first day, ``as_of``), both included."""
    months = as_of.year * 12 + as_of.month - 1 - 11
    return dt.date(months // 12, months % 12 + 1, 1), as_of


def agg_public_holiday(orders: pd.DataFrame, dates: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    """Orders placed on public holidays in each month of the past year (``past_year``)."""
    holidays = public_holidays(dates)
    start, end = past_year(as_of)
    in_window = orders[orders["order_date"].map(lambda d: start <= d <= end and d in holidays)]
    months = in_window["order_date"].map(lambda d: d.month)
    per_month = (
        weights(in_window).groupby(months.to_numpy()).sum() if len(in_window) else pd.Series(dtype="int64")
    )
    row: dict[str, object] = {"ingestion_date": as_of}
    for month, column in enumerate(MONTH_COLUMNS, start=1):
        row[column] = int(per_month.get(month, 0))
    return _typed(pd.DataFrame([row]), ints=MONTH_COLUMNS)


def _shipments_of(orders: pd.DataFrame, shipments: pd.DataFrame) -> pd.DataFrame:
    """The shipments of ``orders``; compacted shipments (already joined to their order) are kept when their order's
    day and product are among ``orders``' (which are only ever narrowed by day and product)."""
    if "order_id" not in shipments:
        return shipments.merge(
            orders[["order_date", "product_id"]].drop_duplicates(),
            on=["order_date", "product_id"],
            how="inner",
        )
    return shipments.merge(orders[["order_id", "order_date", "product_id"]], on="order_id", how="inner")


def is_late(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(
        [
            s is not None and not pd.isna(s) and s >= o + LATE_AFTER and undelivered
            for o, s, undelivered in zip(
                frame["order_date"], frame["shipment_date"], _undelivered(frame), strict=True
            )
        ],
        index=frame.index,
        dtype=bool,
    )


def is_early(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(
        [
            s is not None and not pd.isna(s) and s < o + LATE_AFTER
            for o, s in zip(frame["order_date"], frame["shipment_date"], strict=True)
        ],
        index=frame.index,
        dtype=bool,
    )


def is_undelivered(frame: pd.DataFrame, as_of: dt.date) -> pd.Series:
    return pd.Series(
        [
            (s is None or pd.isna(s)) and undelivered and o + UNDELIVERED_AFTER <= as_of
            for o, s, undelivered in zip(
                frame["order_date"], frame["shipment_date"], _undelivered(frame), strict=True
            )
        ],
        index=frame.index,
        dtype=bool,
    )


def agg_shipments(orders: pd.DataFrame, shipments: pd.DataFrame, as_of: dt.date) -> pd.DataFrame:
    joined = _shipments_of(orders_until(orders, as_of), shipments)
    row = {
        "ingestion_date": as_of,
        "tt_late_shipments": _counted(joined, is_late(joined)),
        "tt_undelivered_items": _counted(joined, is_undelivered(joined, as_of)),
    }
    return _typed(pd.DataFrame([row]), ints=("tt_late_shipments", "tt_undelivered_items"))


def best_performing_product(
    orders: pd.DataFrame,
    reviews: pd.DataFrame,
    shipments: pd.DataFrame,
    products: pd.DataFrame,
    dates: pd.DataFrame,
    as_of: dt.date,
) -> pd.DataFrame:
    """The product with the highest sum of review points (tie: lowest id), and how it sold and shipped.

    ``pct_<n>_star_review`` = n × (its n-star reviews) / (its review points) × 100: the stars' shares of its
    points (they add up to 100). ``most_ordered_day``: its day with the most orders (tie: earliest).
    """
    if reviews.empty:
        return _typed(pd.DataFrame(columns=["ingestion_date"]), ints=())
    points = (reviews["review"] * weights(reviews)).groupby(reviews["product_id"]).sum()
    best = int(points.sort_index().idxmax())  # idxmax takes the first maximum: the lowest id on a tie
    total = int(points[best])
    mine = reviews[reviews["product_id"] == best]
    stars = {n: n * _counted(mine, mine["review"] == n) for n in range(1, 6)}

    scoped = orders_until(orders, as_of)
    my_orders = scoped[scoped["product_id"] == best]
    most_ordered: dt.date | None = None
    if not my_orders.empty:
        per_day = weights(my_orders).groupby(my_orders["order_date"].to_numpy()).sum()
        most_ordered = min(d for d, n in per_day.items() if n == per_day.max())
    my_shipments = _shipments_of(my_orders, shipments)

    names = products.set_index("product_id")["product_name"] if not products.empty else pd.Series(dtype="str")
    row: dict[str, object] = {
        "ingestion_date": as_of,
        "product_id": best,
        "product_name": names.get(best),
        "most_ordered_day": most_ordered,
        "is_public_holiday": None if most_ordered is None else most_ordered in public_holidays(dates),
        "tt_review_points": total,
    }
    for n, column in enumerate(STAR_COLUMNS, start=1):
        row[column] = percent(stars[n], total)
    row["pct_early_shipments"], row["pct_late_shipments"] = early_late_split(
        _counted(my_shipments, is_early(my_shipments)), _counted(my_shipments, is_late(my_shipments))
    )
    frame = _typed(pd.DataFrame([row]), ints=("product_id", "tt_review_points"))
    frame["product_name"] = frame["product_name"].astype("string")
    frame["is_public_holiday"] = frame["is_public_holiday"].astype("boolean")
    for column in (*STAR_COLUMNS, "pct_early_shipments", "pct_late_shipments"):
        frame[column] = frame[column].astype("float64")
    return frame


def early_late_split(early: int, late: int) -> tuple[float, float]:
    """(pct early, pct late) of the shipments that are early or late: two decimals adding up to exactly 100.

    Late is rounded half-up and early is 100 minus it, so the two always add up (118 : 6 → 95.16 / 4.84).
    No early and no late shipment → (0.0, 0.0).
    """
    if early + late == 0:
        return 0.0, 0.0
    late_pct = _percent(late, early + late)
    return float(Decimal(100) - late_pct), float(late_pct)


def percent(count: int, of: int) -> float:
    """``count`` / ``of`` × 100 to two decimals, half-up (as PostgreSQL's ``round`` and ``numeric(5, 2)``: 1 of 32 is
    3.13, where float ``round`` gives 3.12); 0 when ``of`` is 0."""
    return float(_percent(count, of)) if of else 0.0


def _percent(count: int, of: int) -> Decimal:
    return (Decimal(100 * count) / Decimal(of)).quantize(Decimal("0.01"), ROUND_HALF_UP)


def _typed(frame: pd.DataFrame, ints: Iterable[str]) -> pd.DataFrame:
    for column in ints:
        frame[column] = frame[column].astype("Int64")
    return frame


def date_span(
    orders: pd.DataFrame, as_of: dt.date, holidays: Iterable[dt.date] = ()
) -> tuple[dt.date, dt.date]:
    """The years a ``dim_dates`` created from a holiday list covers: every order's, ``as_of``'s and every year of
    the list. Only the orders' years made the first order of a year the list covers fail for a missing day (the
    table, once created, is the user's and never extended). Never past the years its model holds (staging refuses
    an order outside them; one staged before it did must not fail the table for every run)."""
    days = [d for d in orders["order_date"] if d is not None] + [as_of, *holidays]
    first, last = (min(max(day, FIRST_DAY), LAST_DAY) for day in (min(days), max(days)))
    return dt.date(first.year, 1, 1), dt.date(last.year, 12, 31)
