"""A paginator whose cost does not grow with the table: it counts at most COUNT_CAP rows."""

from django.core.paginator import Paginator
from django.utils.functional import cached_property


class CappedPaginator(Paginator):
    """Counts at most COUNT_CAP rows, so a page of a level with 80,000 contacts costs
    the same as one with 80: beyond the cap, pages say "10,000+" and browsing stops at
    the cap (a search, a filter or the CSV export reach the rest)."""

    COUNT_CAP = 10_000
    capped = False

    @cached_property
    def count(self):
        # Any COUNT_CAP rows will do: no need to sort them.
        counted = self.object_list.order_by()[: self.COUNT_CAP + 1].count()
        self.capped = counted > self.COUNT_CAP
        return min(counted, self.COUNT_CAP)
